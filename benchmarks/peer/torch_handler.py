"""A Lambda handler in the seed project's style: TorchScript model, torchvision transforms.

This is the comparison point, written the way the seed (and the tutorials it followed) wrote it:
``import torch`` and ``torchvision`` at the top, a TorchScript model loaded once per container, the
API Gateway event's base64 body parsed as multipart, ``transforms.Compose`` for preprocessing, and
``argmax`` of the model's output. The seed fetched ``model.pt`` from S3; here it is read from
``PEER_MODEL_DIR`` (``model.pt`` + ``labels.json``, made by :mod:`benchmarks.peer.build`), so the
benchmark compares code paths, not network. Its multipart parsing uses the standard library's
``email`` parser where the seed used ``requests_toolbelt`` (same job, no extra dependency).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import functools
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms as transforms
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


@functools.cache
def load_model(model_dir: str) -> tuple[torch.jit.ScriptModule, list[str]]:
    """The TorchScript model and class names; loaded once per process, as the seed did at import."""
    root = Path(model_dir)
    model = torch.jit.load(str(root / "model.pt"), map_location="cpu")
    model.eval()
    labels = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    return model, labels


#: The seed resized to 224 px; ``PEER_IMAGE_SIZE`` runs the same handler at a model's own size,
#: so that a comparison with skyclass can be made on the same work.
SEED_SIZE = 224


def image_size() -> int:
    return int(os.environ.get("PEER_IMAGE_SIZE") or SEED_SIZE)


def transform_image(image_bytes: bytes, size: int = SEED_SIZE) -> torch.Tensor:
    """The seed's test-time pipeline: Resize(size, size) -> ToTensor -> Normalize."""
    transformations = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=MEAN, std=STD),
        ]
    )
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    return transformations(image).unsqueeze(0)


def get_prediction(
    image_bytes: bytes, model_dir: str, size: int | None = None
) -> tuple[str, float]:
    model, labels = load_model(model_dir)
    tensor = transform_image(image_bytes, size or image_size())
    with torch.no_grad():
        log_probs = model(tensor)
    probs = log_probs.exp()[0]
    best = int(probs.argmax().item())
    return labels[best], float(probs[best].item())


def first_file(body: bytes, content_type: str) -> tuple[str, bytes]:
    """The first part of a multipart/form-data body: (filename, content)."""
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    for part in message.iter_parts():
        return part.get_filename() or "", part.get_payload(decode=True) or b""
    raise ValueError("no file in the multipart body")


def classify_image(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway (REST, payload v1) event in, proxy response out."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        content_type = headers.get("content-type", "")
        body = event.get("body") or ""
        raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("latin-1")
        if content_type.startswith("multipart/form-data"):
            filename, picture = first_file(raw, content_type)
        else:
            filename, picture = "", raw
        label, confidence = get_prediction(picture, os.environ["PEER_MODEL_DIR"])
        return {
            "statusCode": 200,
            "headers": {
                "Content-Type": "application/json",
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Credentials": True,
            },
            "body": json.dumps({"file": filename, "label": label, "confidence": confidence}),
        }
    except Exception as exc:
        return {
            "statusCode": 500,
            "headers": {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"},
            "body": json.dumps({"error": repr(exc)}),
        }
