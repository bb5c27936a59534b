"""``skyclass predict --format table|json|csv`` on real photos: the same answers in each format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from skyclass.core.predictor import Predictor
from tests.conftest import BUNDLED_MODEL, CLASSES, run_cli
from tests.serve.support import FIXTURE_IMAGES

IMAGES = sorted(p for p in FIXTURE_IMAGES.iterdir() if p.suffix in (".jpg", ".png"))


def test_csv_has_a_probability_column_per_class() -> None:
    out = run_cli("predict", "--format", "csv", str(FIXTURE_IMAGES))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    header = out.stdout.splitlines()[0].split(",")
    assert header == ["path", "label", "confidence", *(f"p_{c}" for c in CLASSES)]
    assert [r["path"] for r in rows] == [str(p) for p in IMAGES]
    predictor = Predictor(BUNDLED_MODEL)
    for row, path in zip(rows, IMAGES, strict=True):
        expected = predictor.predict(path.read_bytes())
        assert row["label"] == expected.label
        assert float(row["confidence"]) == expected.confidence
        assert {c: float(row[f"p_{c}"]) for c in CLASSES} == expected.probabilities


def test_csv_top_k_of_many_classes_and_json_alias(second_model: Path) -> None:
    args = ["predict", str(IMAGES[0]), "--model", str(second_model)]
    out = run_cli(*args, "--format", "csv", "--top-k", "2")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header == "path,label,confidence,class_1,p_1,class_2,p_2"
    fields = next(csv.reader([row]))
    assert fields[1] == fields[3] and fields[2] == fields[4]
    as_json = run_cli(*args, "--json").stdout
    assert as_json == run_cli(*args, "--format", "json").stdout
    assert json.loads(as_json)["label"] == fields[1]
