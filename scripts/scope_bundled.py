"""(Re)compute a published model folder's scope file from its ONNX model(s) and manifests.

    python scripts/scope_bundled.py models/flying-objects --version 2026.11.29.2 \\
        [--data-root ../shared/data/flying-objects] [--splits docs/data/splits-reviewed] \\
        [--out-of-scope ../shared/data/out-of-scope] [--method auto] [--report docs/scope/NAME.md]

No PyTorch checkpoint is needed: the ONNX files get their ``logits`` / ``features`` / ``cam``
outputs by graph surgery (``log_probs`` unchanged), every scope method is measured (threshold kept
at 95% of the val split; out-of-scope figures per source held out), the best is written as
``scope.npz``, and the folder is re-published under the new version with its sha256s updated.
The measured comparison goes to ``--report`` (markdown).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared"))


def main(argv: list[str] | None = None) -> int:
    from skyclass.export.config import ExportError
    from skyclass.export.images import read_manifest
    from skyclass.export.scope_card import card_section
    from skyclass.export.scope_publish import RescopeRequest, rescope_folder
    from skyclass.outputs import write_text_atomic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--version", required=True, help="the new model version")
    p.add_argument("--data-root", type=Path, default=SHARED / "data" / "flying-objects")
    p.add_argument("--splits", type=Path, default=REPO / "docs/data/splits-reviewed")
    p.add_argument("--out-of-scope", type=Path, default=SHARED / "data" / "out-of-scope")
    p.add_argument("--method", default="auto")
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        rows = {
            s: read_manifest(args.splits / f"{s}.csv", args.data_root)
            for s in ("train", "val", "test")
        }
        result = rescope_folder(
            RescopeRequest(
                folder=args.folder,
                version=args.version,
                out_of_scope=args.out_of_scope if args.out_of_scope.is_dir() else None,
                method=args.method,
                threads=args.threads,
                **rows,
            )
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = args.report or REPO / "docs" / "scope" / f"{args.folder.resolve().name}.md"
    command = "python scripts/scope_bundled.py " + " ".join(argv or sys.argv[1:])
    write_text_atomic(
        report,
        f"# Scope score of {args.folder.name} {args.version}\n\nMade by `{command}`.\n\n"
        + card_section(result).replace("## ", "## ", 1),
    )
    print(f"{args.folder}: {args.version}, scope method {result.method}; report {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
