"""TensorBoard: event files in the run dir (``tensorboard --logdir runs``); a resumed run writes
into the same dir and purges what was logged after its checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.train.trackers.backend import Backend, flatten
from skyclass.train.trackers.base import RunInfo

#: Longest side of an image written into the event file (the photos are megapixels).
MAX_SIDE = 384


def _image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as opened:
        rgb = opened.convert("RGB")
    rgb.thumbnail((MAX_SIDE, MAX_SIDE))
    return np.asarray(rgb)


def _hparam(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value)


class TensorBoardTracker(Backend):
    name = "tensorboard"

    def __init__(self, info: RunInfo, previous: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(info.run_dir)
        # A resumed training run drops the events logged after the checkpoint it resumes from
        # (TensorBoard purges steps >= purge_step).
        purge = info.start_step + 1 if info.resume and info.kind == "train" else None
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)

    def state(self) -> dict[str, Any]:
        return {"log_dir": str(self.log_dir)}

    def log_params(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        from torch.utils.tensorboard.summary import hparams

        flat = {k: _hparam(v) for k, v in flatten(params).items()}
        metrics = {"accuracy/val": 0.0, "loss/val": 0.0}
        writer = self.writer.file_writer
        assert writer is not None  # SummaryWriter opens it in __init__
        for summary in hparams(flat, metrics):
            writer.add_summary(summary)
        self.writer.add_text(
            "config", "    " + json.dumps(params, indent=2).replace("\n", "\n    ")
        )
        rows = "\n".join(f"| {k} | {v} |" for k, v in tags.items())
        self.writer.add_text("tags", "| tag | value |\n|---|---|\n" + rows)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, step: int, tag: str, text: str) -> None:
        self.writer.add_text(tag, text, step)

    def images(self, step: int, tag: str, items: Sequence[tuple[Path, str]]) -> None:
        if len(items) == 1:
            self.writer.add_image(tag, _image(items[0][0]), step, dataformats="HWC")
            return
        for i, (path, _) in enumerate(items):
            self.writer.add_image(f"{tag}/{i:02d}", _image(path), step, dataformats="HWC")
        self.text(step, tag, "\n".join(f"{i:02d}. {c}  " for i, (_, c) in enumerate(items)))

    def finish(self) -> None:
        self.writer.flush()
        self.writer.close()
