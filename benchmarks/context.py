"""What every benchmark section gets: the options, the raw results store, and the peer (lazily).

Each section module owns a ``rows(ctx) -> list[Row]`` next to its measurement; ``benchmarks.run``
keeps the registry of sections, the guard that turns a failure into a row, and the writer.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared")).resolve()


@dataclass(frozen=True)
class Options:
    quick: bool
    threads: int
    model_dir: Path
    data_root: Path
    weights: Path
    checkpoint: Path | None
    out: Path
    work: Path
    sections: tuple[str, ...]
    model_reps: int
    batch_reps: int
    e2e_reps: int
    cold_runs: int
    http_seconds: float
    connections: tuple[int, ...]


def parse_args(argv: list[str] | None, sections: tuple[str, ...], doc: str) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=doc)
    p.add_argument("--quick", action="store_true", help="few repetitions, no builds (smoke test)")
    p.add_argument("--threads", type=int, default=1, help="compute threads, both sides (1)")
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "flying-objects")
    p.add_argument("--data-root", type=Path, default=SHARED / "data" / "flying-objects")
    p.add_argument("--weights", type=Path, default=SHARED / "weights" / "mobilenet_v2_imagenet.pth")
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the training checkpoint the model folder was exported from (the peer's weights); "
        "default: the newest runs/*/checkpoints/best.pt that matches model.onnx, else the shared "
        "backbone + the head read from model.onnx",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work")
    p.add_argument("--only", default=",".join(sections), help=f"subset of {','.join(sections)}")
    p.add_argument("--cold-runs", type=int, default=None, help="fresh processes per side (7)")
    p.add_argument("--http-seconds", type=float, default=None, help="wrk run per level (10)")
    args = p.parse_args(argv)
    chosen = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = set(chosen) - set(sections)
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    return Options(
        quick=quick,
        threads=args.threads,
        model_dir=args.model_dir.resolve(),
        data_root=args.data_root.resolve(),
        weights=args.weights.resolve(),
        checkpoint=args.checkpoint.resolve() if args.checkpoint else None,
        out=args.out.resolve(),
        work=args.work.resolve(),
        sections=chosen,
        model_reps=10 if quick else 150,
        batch_reps=2 if quick else 12,
        e2e_reps=5 if quick else 40,
        cold_runs=args.cold_runs or (2 if quick else 7),
        http_seconds=args.http_seconds or (3.0 if quick else 10.0),
        connections=(1, 8, 32),
    )


def short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


class Skip(Exception):
    """A section that cannot run here, for a reason that is not a failure (no training run yet,
    a tool not installed): it becomes an "n/a (why)" row, with no traceback."""


@dataclass
class Context:
    opt: Options
    raw: dict[str, Any] = field(default_factory=dict)
    _peer: Any = None
    _peer_error: str = ""

    def peer(self) -> Any:
        """The seed-style torch model (built once, on first use); raises if it cannot be built."""
        if self._peer is None and not self._peer_error:
            try:
                self._peer = _build_peer(self.opt)
            except Exception as exc:
                self._peer_error = f"peer model: {short(exc)}"
                raise
        if self._peer is None:
            raise RuntimeError(self._peer_error)
        return self._peer


def _build_peer(opt: Options) -> Any:
    from benchmarks.inference import pick_images
    from benchmarks.peer.build import build_peer
    from skyclass.core.bundle import load_bundle
    from skyclass.core.preprocess import preprocess

    bundle = load_bundle(opt.model_dir)
    checkpoints = sorted(REPO.glob("runs/*/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime)
    probe = pick_images(opt.data_root)["1-2 MP baseline JPEG"].read_bytes()
    return build_peer(
        bundle,
        opt.weights,
        opt.work / "peer-model",
        preprocess(probe, bundle.preprocess),
        [opt.checkpoint] if opt.checkpoint else checkpoints[::-1][:3],
    )
