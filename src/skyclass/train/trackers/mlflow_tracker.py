"""MLflow: a local ``sqlite:///`` store under the runs folder unless MLFLOW_TRACKING_URI says
otherwise (``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``); the run id is kept in
trackers.json so --resume, evaluate and export log into the same MLflow run."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skyclass.train.trackers.backend import Backend, flatten
from skyclass.train.trackers.base import RunInfo
from skyclass.train.trackers.identity import folder_sha256
from skyclass.train.trackers.report import EvalReport

#: MLflow's limit on a param value.
MAX_PARAM = 6000
#: Per-step metrics are sent in batches of at most this many (one request each).
BATCH = 500


def default_store(run_dir: Path) -> tuple[str, str]:
    """(tracking URI, artifact root) beside the run dirs: runs/mlflow.db, runs/mlartifacts."""
    parent = Path(run_dir).resolve().parent
    return f"sqlite:///{parent / 'mlflow.db'}", (parent / "mlartifacts").as_uri()


class MlflowTracker(Backend):
    name = "mlflow"

    def __init__(self, info: RunInfo, previous: Mapping[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        env_uri = os.environ.get("MLFLOW_TRACKING_URI")
        uri, artifacts = default_store(info.run_dir)
        self.uri = previous.get("tracking_uri") or env_uri or uri
        self.client = MlflowClient(tracking_uri=self.uri)
        self.pending: list[Any] = []
        self.continued = bool(previous.get("run_id"))
        if self.continued:
            self.run_id = str(previous["run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "skyclass")
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = artifacts if self.uri == uri else None
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        run = self.client.create_run(
            experiment_id, run_name=info.name, tags={"skyclass.kind": info.kind}
        )
        self.run_id = run.info.run_id

    def state(self) -> dict[str, Any]:
        return {"tracking_uri": self.uri, "run_id": self.run_id}

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        run_tags = [RunTag(k, str(v)) for k, v in tags.items()]
        # A continued run already has its params; MLflow refuses to change a logged value.
        flat = {} if self.continued else flatten(params)
        items = [Param(k, str(v)[:MAX_PARAM]) for k, v in flat.items()]
        for i in range(0, max(len(items), 1), 100):
            self.client.log_batch(
                self.run_id, params=items[i : i + 100], tags=run_tags if i == 0 else []
            )
        if not self.continued:
            self.client.log_dict(self.run_id, dict(params), "config.json")

    def _metric(self, key: str, value: float, step: int) -> Any:
        from mlflow.entities import Metric

        return Metric(key, float(value), int(time.time() * 1000), int(step))

    def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
            self.client.log_batch(self.run_id, metrics=batch)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.pending += [self._metric("loss/step", loss, step), self._metric("lr/step", lr, step)]
        if len(self.pending) >= BATCH:
            self._flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self.pending += [self._metric(k, v, step) for k, v in values.items()]
        self._flush()

    def text(self, step: int, tag: str, text: str) -> None:
        self.client.log_text(self.run_id, text + "\n", f"{tag}/{step:08d}.txt")

    def images(self, step: int, tag: str, items: Sequence[tuple[Path, str]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for i, (path, caption) in enumerate(items):
                name = "".join(c if c.isalnum() or c in "-_." else "_" for c in caption)[:120]
                shutil.copyfile(path, Path(tmp) / f"{i:02d}_{name}{Path(path).suffix}")
            self.client.log_artifacts(self.run_id, tmp, tag)

    def log_stage(self, step: int, stage: str, info: Mapping[str, Any]) -> None:
        text = f"step {step}: " + ", ".join(f"{k} {v}" for k, v in info.items())
        self.client.set_tag(self.run_id, f"stage.{stage}", text)
        if "index" in info:
            self.scalars(step, {"stage/index": float(info["index"])})

    def log_curve(
        self, step: int, tag: str, xs: Sequence[float], ys: Sequence[float], x: str, y: str
    ) -> None:
        self.pending += [self._metric(f"{tag}/{y}", v, i) for i, v in enumerate(ys)]
        self.pending += [self._metric(f"{tag}/{x}", v, i) for i, v in enumerate(xs)]
        self._flush()

    def log_eval(self, step: int, split: str, report: EvalReport) -> None:
        super().log_eval(step, split, report)
        self.client.log_artifacts(self.run_id, str(report.folder), f"reports/{split}")

    def log_artifact(self, step: int, path: Path, name: str, sha256: str) -> None:
        _, files = folder_sha256(path)
        self.client.log_artifacts(self.run_id, str(path), name)
        self.client.log_dict(self.run_id, {"sha256": sha256, "files": files}, f"{name}.sha256.json")
        self.client.set_tag(self.run_id, f"{name}.sha256", sha256)

    def finish(self) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, "FINISHED")
