"""The scope section of a model card, and the method comparison table (docs/scope/)."""

from __future__ import annotations

import math

from skyclass.core.bundle import ModelBundle
from skyclass.export.scope_calibrate import ScopeResult
from skyclass.export.scope_eval import AUROC_TARGET, CATEGORIES, FPR_TARGET, Figures

SECTION_TITLE = '## Out of scope ("none of these")'
REPUBLISHED = "Re-published as"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def comparison_table(figures: list[Figures]) -> str:
    head = (
        "| method | outlier exposure | AUROC | FPR aircraft | FPR scenes | FPR everyday | "
        "test kept | accuracy all -> accepted | targets met |"
    )
    lines = [head, "|" + "---|" * 9]
    for f in figures:
        lines.append(
            f"| {f.method} | {'yes (leave-one-source-out)' if f.outlier_exposure else 'no'} | "
            f"{f.auroc:.3f} | "
            + " | ".join(_pct(f.fpr.get(c, float("nan"))) for c in CATEGORIES)
            + f" | {_pct(f.test_kept)} | {_pct(f.accuracy_all)} -> {_pct(f.accuracy_accepted)}"
            f" | {'yes' if f.meets_targets else 'no'} |"
        )
    return "\n".join(lines)


def card_section(result: ScopeResult) -> str:
    """Markdown for MODEL_CARD.md: the shipped method's figures per variant, and the comparison."""
    fp32 = result.chosen["fp32"]
    targets = ", ".join(f"{c} <= {100 * t:.0f}%" for c, t in FPR_TARGET.items())
    lines = [
        SECTION_TITLE,
        "",
        f"Method shipped: **{result.method}** (`scope.npz`), threshold calibrated to keep 95% of "
        f"the in-scope validation photos. A photo scoring below it is answered with `label: null`,"
        f" `in_scope: false` and its top guess. Targets: AUROC >= {AUROC_TARGET}, FPR at 95% kept "
        f"{targets}.",
        "",
        "| variant | threshold | AUROC | FPR aircraft / scenes / everyday (photos) | test kept | "
        "accuracy all -> accepted |",
        "|---|---|---|---|---|---|",
    ]
    for variant, f in result.chosen.items():
        fpr = " / ".join(
            f"{_pct(f.fpr.get(c, float('nan')))} ({f.out_counts[c]})" for c in CATEGORIES
        )
        lines.append(
            f"| {variant} | {f.threshold:.4g} | {f.auroc:.3f} | {fpr} | {_pct(f.test_kept)} | "
            f"{_pct(f.accuracy_all)} -> {_pct(f.accuracy_accepted)} |"
        )
    lines += [
        "",
        "In-scope test photos rejected, per class (fp32): "
        + ", ".join(f"{label} {r[0]}/{r[1]}" for label, r in fp32.rejected_per_class.items())
        + ".",
        "",
        "Every method measured (fp32):",
        "",
        comparison_table(result.figures["fp32"]),
        "",
    ]
    return "\n".join(lines)


def replace_section(card: str, section: str) -> str:
    """``card`` with its scope section replaced by ``section`` (appended when it has none)."""
    start = card.find(SECTION_TITLE)
    if start < 0:
        return card.rstrip("\n") + "\n\n" + section
    nxt = card.find("\n## ", start + len(SECTION_TITLE))
    rest = card[nxt + 1 :] if nxt >= 0 else ""
    return card[:start] + section + ("\n" + rest if rest else "")


def refresh_header(card: str, bundle: ModelBundle) -> str:
    """The card's title version and files table rewritten from ``bundle`` (a re-published
    folder), with a line saying what changed; the rest of the card is left as it was."""
    lines = card.split("\n")
    if lines and lines[0].startswith("# Model card: "):
        lines[0] = f"# Model card: {bundle.name} {bundle.version}"
    for i, line in enumerate(lines):
        for variant, f in bundle.files.items():
            if line.startswith(f"| {variant} | {f.path} |"):
                lines[i] = f"| {variant} | {f.path} | {f.bytes:,} | `{f.sha256}` |"
    text = "\n".join(lines)
    note = (
        f"{REPUBLISHED} {bundle.version}: outputs `logits`, `features` and `cam` added to the ONNX "
        "files by graph surgery (`log_probs` computed by the same nodes, bit for bit), and a scope "
        f"file `{bundle.scope.path if bundle.scope else 'none'}` (sha256 "
        f"`{bundle.scope.sha256 if bundle.scope else ''}`); see the last section."
    )
    start = text.find(REPUBLISHED)
    if start >= 0:
        end = text.find("\n", start)
        return text[:start] + note + (text[end:] if end >= 0 else "")
    anchor = text.find("\n\nMade from ")
    return text[:anchor] + "\n\n" + note + text[anchor:] if anchor >= 0 else text
