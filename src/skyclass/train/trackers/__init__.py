"""Experiment trackers: metrics.csv always; TensorBoard, MLflow and Weights & Biases on request
(``log = [...]`` in the config, ``--log`` on the commands), each an optional extra imported only
when asked for. Commands call a few ``Trackers`` methods; each backend logs in its own idiom."""

from skyclass.train.trackers.base import (
    BACKENDS,
    EXTRAS,
    RunInfo,
    Tracker,
    TrackerUnavailable,
    parse_log,
    require,
)
from skyclass.train.trackers.fanout import Trackers, open_trackers
from skyclass.train.trackers.identity import run_tags

__all__ = [
    "BACKENDS",
    "EXTRAS",
    "RunInfo",
    "Tracker",
    "TrackerUnavailable",
    "Trackers",
    "open_trackers",
    "parse_log",
    "require",
    "run_tags",
]
