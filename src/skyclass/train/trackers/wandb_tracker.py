"""Weights & Biases: one W&B run per skyclass run, its id kept in trackers.json and resumed with
``resume="allow"``; files under ``RUN_DIR/wandb``. WANDB_MODE=offline (then ``wandb sync``),
WANDB_PROJECT and the other WANDB_* variables are W&B's own."""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skyclass.train.trackers.backend import Backend
from skyclass.train.trackers.base import RunInfo
from skyclass.train.trackers.identity import folder_sha256
from skyclass.train.trackers.report import EvalReport


def new_run_id() -> str:
    """A W&B run id: 8 lowercase letters and digits, as W&B makes them."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _artifact_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


class WandbTracker(Backend):
    name = "wandb"

    def __init__(self, info: RunInfo, previous: Mapping[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.project = previous.get("project") or os.environ.get("WANDB_PROJECT", "skyclass")
        run_id = previous.get("id") or new_run_id()
        self.run = wandb.init(
            project=self.project,
            name=info.name,
            id=str(run_id),
            resume="allow",
            dir=str(info.run_dir),
            job_type=info.kind,
            reinit="create_new",
        )
        self.run_name = info.name

    def state(self) -> dict[str, Any]:
        return {"id": self.run.id, "project": self.project}

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)
        self.run.config.update({"run_tags": dict(tags)}, allow_val_change=True)
        # W&B tags are short labels: the long hashes stay in config.run_tags.
        short = [f"{k}:{v}"[:64] for k, v in tags.items() if not k.startswith("data.")]
        self.run.tags = tuple(dict.fromkeys([*(self.run.tags or ()), *short]))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        self.run.log({tag: text}, step=step)

    def images(self, step: int, tag: str, items: Sequence[tuple[Path, str]]) -> None:
        images = [self.wandb.Image(str(path), caption=caption) for path, caption in items]
        self.run.log({tag: images}, step=step)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.run.log({"loss/step": loss, "lr/step": lr}, step=step)

    def log_curve(
        self, step: int, tag: str, xs: Sequence[float], ys: Sequence[float], x: str, y: str
    ) -> None:
        table = self.wandb.Table(
            columns=[x, y], data=[[float(a), float(b)] for a, b in zip(xs, ys, strict=True)]
        )
        plot = self.wandb.plot.line(table, x, y, title=tag)
        self.run.log({tag: plot}, step=step)

    def log_eval(self, step: int, split: str, report: EvalReport) -> None:
        super().log_eval(step, split, report)
        per_class = report.metrics.get("per_class", {})
        table = self.wandb.Table(
            columns=["class", "precision", "recall", "f1", "support"],
            data=[
                [c, m["precision"], m["recall"], m["f1"], m["support"]]
                for c, m in per_class.items()
            ],
        )
        self.run.log({f"{split}/per_class": table}, step=step)
        self.run.summary[f"{split}/accuracy"] = float(report.metrics["accuracy"])

    def log_artifact(self, step: int, path: Path, name: str, sha256: str) -> None:
        _, files = folder_sha256(path)
        artifact = self.wandb.Artifact(
            _artifact_name(f"{self.run_name}-{name}"),
            type="model",
            metadata={"sha256": sha256, "files": files},
        )
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact)
        self.run.summary[f"{name}.sha256"] = sha256

    def finish(self) -> None:
        self.run.finish()
