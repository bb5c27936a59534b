"""Readers for what the trackers wrote, used by the tracker tests: TensorBoard event files
(tensorboard's own EventAccumulator), the MLflow sqlite store (MlflowClient) and W&B offline run
files (the LevelDB-style record log of ``run-ID.wandb``, records parsed with wandb's protobufs)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

WANDB_BLOCK = 32768
WANDB_HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte)


def tensorboard(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def mlflow_client(out: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")


def wandb_records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` file (32 KiB blocks of chunks: crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, buf, out = WANDB_HEADER, b"", []
    while pos + 7 <= len(data):
        left = WANDB_BLOCK - pos % WANDB_BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            whole = chunk
        elif kind == 2:
            buf = chunk
            continue
        elif kind == 3:
            buf += chunk
            continue
        elif kind == 4:
            whole = buf + chunk
        else:
            continue
        record = pb.Record()
        record.ParseFromString(whole)
        out.append(record)
    return out


def _items(items: Any) -> dict[str, Any]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def wandb_run(path: Path) -> dict[str, Any]:
    """{"id", "config", "history": [rows], "summary": {...}, "artifacts": [records]}."""
    run: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "artifacts": []}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run["id"] = rec.run.run_id
            run["config"].update(_items(rec.run.config.update))
        elif kind == "config":
            run["config"].update(_items(rec.config.update))
        elif kind == "history":
            run["history"].append(_items(rec.history.item))
        elif kind == "summary":
            run["summary"].update(_items(rec.summary.update))
        elif kind == "artifact":
            run["artifacts"].append(rec.artifact)
    return run


def ddp_worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    """One rank of a real gloo process group logging an epoch through open_trackers."""
    import torch.distributed as dist

    from skyclass.train.trackers import RunInfo, open_trackers, run_tags

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        trackers = open_trackers(("csv", "tensorboard"), RunInfo(Path(run_dir), "ddp"))
        tags = run_tags({}, "cpu")
        trackers.log_params({"rank": rank}, tags)
        trackers.log_epoch({"epoch": 1, "stage": "head", "train_loss": 1.0 + rank}, 2)
        trackers.finish()
        Path(run_dir, f"tags-{rank}.json").write_text(json.dumps(tags))
        dist.barrier()
    finally:
        dist.destroy_process_group()
