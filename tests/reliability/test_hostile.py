"""The hostile corpus through predict(), the HTTP app on a real server, and Lambda v1 and v2 events.

Every input gets a 4xx JSON answer with a reason (or a correct prediction where the image is
valid), never a 5xx, a traceback or a path; the server keeps serving and keeps its memory bounded.
The answers are written to ``test-artifacts/hostile.md`` as the issue's table.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from skyclass.core.errors import (
    CorruptImage,
    DecodeBudgetExceeded,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
)
from skyclass.core.predictor import Predictor
from skyclass.core.preprocess import preprocess
from skyclass.serve.handler import LambdaAdapter
from tests.conftest import CLASSES
from tests.reliability.conftest import (
    ARTIFACTS,
    Answer,
    LiveServer,
    answer_from_json,
    internals_in,
    lambda_answer,
    lambda_event,
    predict_answer,
)
from tests.reliability.corpus import Hostile, build_corpus, encode, exif_pair, source_photo

CHANNELS = ("predict", "http", "lambda_v1", "lambda_v2")
CASES = [c.name for c in build_corpus()]
ERROR_STATUS = {
    e.code: e.status
    for e in (EmptyImage, NotAnImage, CorruptImage, ImageTooLarge, DecodeBudgetExceeded)
}


def http_answer(client: httpx.Client, case: Hostile) -> Answer:
    response = client.post(
        "/classify", content=case.body, headers={"Content-Type": case.content_type}
    )
    return answer_from_json(
        response.status_code, response.text, response.headers.get("content-type", "")
    )


@pytest.fixture(scope="module")
def answers(
    corpus: list[Hostile], predictor: Predictor, handler: LambdaAdapter, live_server: LiveServer
) -> dict[str, dict[str, Answer]]:
    """Every case through every channel, once; the table is written from these."""
    out: dict[str, dict[str, Answer]] = {}
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        for case in corpus:
            row: dict[str, Answer] = {}
            if case.image is not None:
                row["predict"] = predict_answer(predictor, case.image)
            row["http"] = http_answer(client, case)
            row["lambda_v1"] = lambda_answer(handler, lambda_event("v1", case))
            row["lambda_v2"] = lambda_answer(handler, lambda_event("v2", case))
            out[case.name] = row
    write_table(corpus, out)
    return out


def write_table(corpus: list[Hostile], answers: dict[str, dict[str, Answer]]) -> None:
    lines = [
        "# Hostile inputs: what each channel answered",
        "",
        "predict = `Predictor.predict` in process (status of the typed ImageError, or 200 + label);"
        " http = `skyclass serve` on 127.0.0.1; lambda = `classify_image` with API Gateway"
        " REST (v1) and HTTP API (v2) events, base64 bodies. Label and top probability are from"
        " the bundled model.",
        "",
        "| input | what | predict | HTTP | Lambda v1 | Lambda v2 |",
        "|---|---|---|---|---|---|",
    ]
    for case in corpus:
        row = answers[case.name]
        cells = [row[c].short() if c in row else "n/a (no image)" for c in CHANNELS]
        lines.append(f"| {case.name} | {case.what} | " + " | ".join(cells) + " |")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "hostile.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def check_answer(answer: Answer, status: int, code: str | None, channel: str) -> None:
    assert answer.status < 500, f"{channel}: {answer}"
    assert not internals_in(answer.text), f"{channel} leaks internals: {answer.text[:300]}"
    assert (answer.status, answer.code) == (status, code), f"{channel}: {answer.text[:300]}"
    if channel != "predict":
        assert answer.content_type == "application/json", channel
    if code is None:
        # A valid image gets a class, or (judged out of scope by the flagship's scope, issue 16:
        # the synthetic images here mostly are) no label and a top guess that is a class.
        out_of_scope = answer.label is None and any(
            f'"top_guess":{sep}"{c}"' in answer.text for c in CLASSES for sep in ("", " ")
        )
        assert answer.label in CLASSES or out_of_scope, answer.text[:300]
        probs = answer.probabilities or {}
        assert set(probs) == set(CLASSES) and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    elif channel != "predict":
        assert len(answer.text) < 1000 and '"error"' in answer.text, answer.text


@pytest.mark.parametrize("name", CASES)
def test_each_channel_answers_as_expected(
    name: str, corpus: list[Hostile], answers: dict[str, dict[str, Answer]]
) -> None:
    (case,) = [c for c in corpus if c.name == name]
    row = answers[name]
    if case.image is not None:
        status = ERROR_STATUS[case.predict_code] if case.predict_code else 200
        check_answer(row["predict"], status, case.predict_code, "predict")
    check_answer(row["http"], case.status, case.code, "http")
    for version in ("lambda_v1", "lambda_v2"):
        check_answer(row[version], case.status, case.lambda_code or case.code, version)
    if case.code is None:  # a valid image: every channel gives the in-process answer
        expected = row["predict"]
        for channel in ("http", "lambda_v1", "lambda_v2"):
            assert row[channel].label == expected.label
            assert row[channel].probabilities == pytest.approx(expected.probabilities, abs=1e-5)


def test_predict_errors_name_the_problem(answers: dict[str, dict[str, Answer]]) -> None:
    reasons = {name: row["predict"].text for name, row in answers.items() if "predict" in row}
    assert "empty" in reasons["zero_bytes"]
    assert "not an image" in reasons["random_bytes"]
    assert "truncated" in reasons["jpeg_cut_50"]
    assert "PNG header is damaged" in reasons["png_bad_crc_ihdr"]
    assert "pixels" in reasons["bomb_png_30000"] and "pixels" in reasons["jpeg_sof_65000"]
    assert "6,291,456 bytes" in reasons["over_6mb"]


def test_exif_rotated_photo_is_classified_upright(predictor: Predictor) -> None:
    """The sideways-stored phone photo becomes the upright picture, not the sideways one."""
    photo = Image.open(source_photo()).convert("RGB")
    photo = photo.resize((photo.width // 4, photo.height // 4))
    upright, sideways = exif_pair(photo)
    ignored = encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95)
    t_up, t_exif, t_side = (preprocess(x) for x in (upright, sideways, ignored))
    # Same picture up to JPEG noise; the EXIF-ignoring reading is a different picture.
    assert np.abs(t_exif - t_up).mean() < 0.05
    assert np.abs(t_side - t_up).mean() > 10 * np.abs(t_exif - t_up).mean()
    p_up, p_exif = predictor.predict(upright), predictor.predict(sideways)
    assert p_exif.label == p_up.label
    assert p_exif.probabilities == pytest.approx(p_up.probabilities, abs=0.02)


def test_server_keeps_serving_after_the_corpus(
    answers: dict[str, dict[str, Answer]], live_server: LiveServer, predictor: Predictor
) -> None:
    assert answers  # the corpus has been sent
    jpeg = source_photo().read_bytes()
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        assert client.get("/health").json()["status"] == "ok"
        ok = client.post("/classify", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert ok.status_code == 200
    assert ok.json()["label"] == predictor.predict(jpeg).label
    assert live_server.proc.poll() is None


def test_memory_stays_bounded_over_repeated_corpus(
    corpus: list[Hostile], live_server: LiveServer
) -> None:
    """RSS after 8 more rounds of the corpus is within 5% (and 24 MiB) of RSS after 2 rounds."""

    def rounds(client: httpx.Client, n: int) -> None:
        for _ in range(n):
            for case in corpus:
                response = http_answer(client, case)
                assert response.status < 500

    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        rounds(client, 2)  # warm: allocator pools, thread pool, decoders
        before = live_server.rss_kib()
        rounds(client, 8)
        after = live_server.rss_kib()
    growth = after - before
    print(f"server RSS after 2 rounds {before} KiB, after 10 rounds {after} KiB (+{growth} KiB)")
    assert growth < min(0.05 * before, 24 * 1024), (before, after)


def test_corpus_images_are_what_they_say(corpus: list[Hostile]) -> None:
    """The valid inputs really are the formats and modes named (so the table means something)."""
    expect = {
        "cmyk_jpeg": ("JPEG", "CMYK"),
        "png_16bit": ("PNG", "I;16"),
        "palette_png_transparent": ("PNG", "P"),
        "animated_gif": ("GIF", "P"),
        "webp": ("WEBP", "RGB"),
        "grayscale_jpeg": ("JPEG", "L"),
    }
    by_name = {c.name: c for c in corpus}
    for name, (fmt, mode) in expect.items():
        img = Image.open(io.BytesIO(by_name[name].image or b""))
        assert (img.format, img.mode) == (fmt, mode), name
    assert Image.open(io.BytesIO(by_name["animated_gif"].image or b"")).n_frames == 3
    assert "transparency" in Image.open(io.BytesIO(by_name["palette_png_transparent"].image)).info
    assert Image.open(io.BytesIO(by_name["strip_10000x50"].image or b"")).size == (10000, 50)
    assert Image.open(io.BytesIO(by_name["exif_rotated"].image or b"")).getexif()[0x0112] == 6
