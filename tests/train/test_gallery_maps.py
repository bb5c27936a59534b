"""Class activation maps in the misclassified gallery: exact maps from the PyTorch model, drawn by
serving's overlay code, one per shown card, found where a real drone was pasted on a real sky."""

from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from skyclass.core.explain import cam_overlay, peak_of
from skyclass.core.preprocess import PreprocessConfig, preprocess
from skyclass.data.transforms import build_test_transform, eval_input
from skyclass.model import linear_head, load_trained
from skyclass.reporting.html import THUMBNAIL_SIDE
from skyclass.train.config import StageConfig
from skyclass.train.fit import fit
from skyclass.train.gallery_maps import explain_files, gallery_maps
from skyclass.train.reports import write_gallery
from tests.composites import DRONES, POSITIONS, composite_jpeg, drone, inside_paste, sky
from tests.conftest import BUNDLED_MODEL, CLASSES, shared_images
from tests.train.flagship import Flagship, flagship_in_torch
from tests.train.test_train import tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def flagship() -> Flagship:
    return flagship_in_torch()


def _onnx_cams(jpegs: list[bytes], flagship: Flagship) -> np.ndarray:
    session = ort.InferenceSession(
        str(BUNDLED_MODEL / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    batch = np.concatenate([preprocess(b, flagship.preprocess) for b in jpegs])
    (cams,) = session.run(["cam"], {"input": batch})
    return cams


def test_cam_mean_plus_bias_is_the_logit_on_real_photos(flagship: Flagship) -> None:
    files = [f for cls in CLASSES for f in shared_images(cls, 2)]
    found = explain_files(flagship.model, files, flagship.preprocess)
    assert all(f is not None for f in found)
    cams = np.stack([f.cams for f in found if f is not None])
    # The model's own logits and log-probabilities, through its modules, from the same input.
    transform = build_test_transform(flagship.preprocess)
    x = torch.stack(
        [transform(image=eval_input(f.read_bytes(), flagship.preprocess))["image"] for f in files]
    )
    model, head = flagship.model, linear_head(flagship.model)
    with torch.no_grad():
        pooled = F.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
        logits = head(pooled).numpy()
        log_probs = model(x).numpy()
    assert cams.shape == (8, 4, 9, 9)  # 288 px input: a 9 x 9 map per class
    from_maps = cams.mean(axis=(2, 3)) + head.bias.detach().numpy()
    np.testing.assert_allclose(from_maps, logits, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        torch.log_softmax(torch.from_numpy(from_maps), 1), log_probs, atol=1e-4
    )
    assert np.ptp(logits) > 5  # real, distinct logits: not a vacuous comparison
    # The same maps as the ONNX file's ``cam`` output that serving overlays.
    onnx = _onnx_cams([f.read_bytes() for f in files], flagship)
    np.testing.assert_allclose(cams, onnx, rtol=0, atol=1e-3 * float(np.abs(onnx).max()))


@pytest.mark.parametrize("drone_name", DRONES)
def test_predicted_class_map_peaks_on_the_pasted_drone(
    flagship: Flagship, drone_name: str, tmp_path: Path
) -> None:
    background, crop = sky(), drone(drone_name)
    files = []
    for k, at in enumerate(POSITIONS):
        files.append(tmp_path / f"composite{k}.jpg")
        files[-1].write_bytes(composite_jpeg(background, crop, at))
    found = explain_files(flagship.model, files, flagship.preprocess)
    bias = linear_head(flagship.model).bias.detach().numpy()
    for at, maps in zip(POSITIONS, found, strict=True):
        assert maps is not None
        pred = int(np.argmax(maps.cams.mean(axis=(1, 2)) + bias))
        assert inside_paste(peak_of(maps.cams[pred]), at), (drone_name, at, CLASSES[pred])


def _cards(html: str) -> list[str]:
    return re.findall(r"<figure>(.*?)</figure>", html, flags=re.S)


def _png_pixels(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG" and max(image.size) <= THUMBNAIL_SIDE
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_tiny_run_gallery_has_a_map_per_shown_card(
    manifests: dict[str, Path], tmp_path: Path
) -> None:
    head_only = (StageConfig(name="head", epochs=1, lr=1e-3),)
    run = fit(tiny_config(manifests, tmp_path, test=None, stages=head_only), progress=False).run_dir
    reports = run / "reports" / "val"
    rows = list(csv.DictReader((reports / "predictions.csv").open()))
    wrong = {Path(r["file"]).name: r for r in rows if r["label"] != r["predicted"]}
    assert wrong, "the tiny run should misclassify some of its 8 val photos"
    html = (reports / "misclassified.html").read_text()
    cards = _cards(html)
    assert len(cards) == len(wrong)
    model, ckpt = load_trained(run / "checkpoints" / "best.pt")
    pre = PreprocessConfig.from_dict(ckpt["preprocess"])
    groups, distinct = set(), 0
    for card in cards:
        name = re.search(r"<small>(.*?)</small>", card)
        assert name is not None
        row = wrong[name.group(1)]
        groups.update(re.findall(r'type="radio" name="([^"]+)"', card))
        assert card.count('type="radio"') == 3 and "data:image/jpeg;base64," in card  # photo kept
        maps = re.findall(r'src="data:image/png;base64,([^"]+)"', card)
        assert len(maps) == 2
        # The predicted class's map, then the true class's: serving's overlay of this model's map.
        (found,) = explain_files(model, [Path(row["file"])], pre)
        assert found is not None
        for b64, label in zip(maps, (row["predicted"], row["label"]), strict=True):
            want = cam_overlay(
                found.photo, found.cams[CLASSES.index(label)], label, side=THUMBNAIL_SIDE
            )
            shown = _png_pixels(b64)
            assert np.abs(shown - _png_pixels(base64.b64encode(want.png).decode())).max() <= 2
        distinct += int(np.abs(_png_pixels(maps[0]) - _png_pixels(maps[1])).max() > 8)
    assert distinct  # the two maps differ: the comparison above tells them apart
    assert len(groups) == len(cards)  # one radio group per card: each switches on its own
    assert ".views>input.v1:checked" in html


def test_a_run_with_nothing_misclassified_gets_no_maps_and_no_work(tmp_path: Path) -> None:
    files = shared_images("flying_birds", 2)
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.7, 0.1, 0.1, 0.1]])
    # model=None: any work on it would raise.
    assert gallery_maps(None, files, [0, 0], probs, CLASSES, PreprocessConfig()) == {}
    page = write_gallery(files, [0, 0], probs, CLASSES, tmp_path / "g.html", maps={}).read_text()
    assert "No misclassified images." in page and ".views" not in page
