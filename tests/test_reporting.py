"""skyclass.reporting: one metrics rule, safe thumbnails, reversible spreadsheet cells, figures."""

from __future__ import annotations

import base64
import io
import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from skyclass.reporting.cells import FORMULA_STARTS, from_spreadsheet_safe, spreadsheet_safe
from skyclass.reporting.figures import draw_png, save_figure
from skyclass.reporting.html import page, thumbnail_uri
from skyclass.reporting.metrics import classification_metrics
from tests.conftest import shared_images

LABELS = ("a", "b", "c", "d")


def test_metrics_match_scikit_learn_with_zero_division_0():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)  # class "d" has no sample
    pred = np.where(rng.random(200) < 0.7, truth, rng.integers(0, 4, 200))
    pred[pred == 2] = 1  # class "c" is never predicted
    m = classification_metrics(truth, pred, LABELS)
    idx = list(range(4))
    prec, rec, f1, sup = precision_recall_fscore_support(truth, pred, labels=idx, zero_division=0)
    for i, label in enumerate(LABELS):
        c = m.per_class[label]
        assert (c.precision, c.recall, c.f1, c.support) == pytest.approx(
            (prec[i], rec[i], f1[i], sup[i])
        )
    assert np.array_equal(np.array(m.confusion), confusion_matrix(truth, pred, labels=idx))
    assert m.accuracy == pytest.approx(float((truth == pred).mean()))
    assert m.per_class["c"].precision == 0.0 and m.per_class["d"].recall == 0.0


def test_an_empty_set_gives_zeros_not_nan_and_strict_json():
    m = classification_metrics([], [], LABELS)
    assert m.n == 0 and m.accuracy == 0.0
    assert all(v.precision == v.recall == v.f1 == 0.0 for v in m.per_class.values())
    json.dumps(m.to_dict(), allow_nan=False)


def test_indices_outside_the_labels_are_refused():
    with pytest.raises(ValueError, match="class indices"):
        classification_metrics([0, 4], [0, 1], LABELS)
    with pytest.raises(ValueError, match="predictions"):
        classification_metrics([0, 1], [0], LABELS)


@pytest.mark.parametrize(
    "value",
    ["=HYPERLINK(1)", "+1", "-2", "@sum", "\tx", "\rx", "'quoted", "''", "birds/a.jpg", "", "é'="],
)
def test_cells_are_never_formulas_and_round_trip(value):
    cell = spreadsheet_safe(value)
    assert not cell.startswith(FORMULA_STARTS)
    assert from_spreadsheet_safe(cell) == value
    if not value.startswith((*FORMULA_STARTS, "'")):
        assert cell == value


def test_thumbnail_of_a_real_photo(tmp_path):
    photo = shared_images("flying_birds", 1)[0]
    uri = thumbnail_uri(photo, side=64)
    assert uri is not None and uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        assert max(img.size) <= 64 and img.format == "JPEG"


@pytest.mark.timeout(30)
def test_no_thumbnail_for_devices_fifos_and_non_images(tmp_path):
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "notes.jpg").write_text("not a photo")
    done: list[str | None] = []
    worker = threading.Thread(
        target=lambda: done.extend(
            thumbnail_uri(tmp_path / n) for n in ("zero.jpg", "pipe.jpg", "notes.jpg", "gone.jpg")
        ),
        daemon=True,
    )
    worker.start()
    worker.join(20)
    assert done == [None, None, None, None]


def test_page_escapes_its_title_and_carries_the_stylesheet():
    doc = page("<b>x</b>", "<p>body</p>")
    assert "<title>&lt;b&gt;x&lt;/b&gt;</title>" in doc and "<p>body</p>" in doc
    assert ".grid{" in doc


def test_figures_as_png_bytes_and_atomic_files(tmp_path):
    png = draw_png(lambda fig, ax: ax.plot([0, 1], [1, 0]))
    assert png.startswith(b"\x89PNG")
    from skyclass.reporting.figures import pyplot

    fig, ax = pyplot().subplots()
    ax.plot([0, 1])
    out = save_figure(fig, tmp_path / "sub" / "curve.png")
    assert out.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in out.parent.iterdir()) == ["curve.png"]
