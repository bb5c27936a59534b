"""The scope section of a model card, and the method comparison table (docs/scope/)."""

from __future__ import annotations

import math

from skyclass.export.scope_calibrate import ScopeResult
from skyclass.export.scope_eval import AUROC_TARGET, CATEGORIES, FPR_TARGET, Figures

SECTION_TITLE = '## Out of scope ("none of these")'


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
