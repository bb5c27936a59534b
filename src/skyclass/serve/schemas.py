"""The API's response models and request-body docs: what /openapi.json describes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from skyclass.serve.body import MULTIPART, RAW_IMAGE_TYPES

# ---- response models (they document the API in /openapi.json) ----------------------------------


class ErrorOut(BaseModel):
    error: str = Field(description="what was wrong, for a person to read")
    code: str = Field(description="a stable machine-readable code, e.g. not_an_image")


class ModelRefOut(BaseModel):
    name: str
    version: str
    sha256: str
    variant: str


class ScopeOut(BaseModel):
    score: float = Field(description="higher = more like the model's training photos")
    threshold: float = Field(description="photos scoring below it are out of scope")
    method: str = Field(description="how the score is computed (msp, energy, mahalanobis, ...)")


class PeakOut(BaseModel):
    x: float = Field(ge=0, le=1, description="fraction of the width")
    y: float = Field(ge=0, le=1, description="fraction of the height")


class ExplanationOut(BaseModel):
    label: str = Field(description="the class whose activation map is shown")
    method: str = Field(description="cam: the head's weights over the last feature map")
    png_base64: str = Field(description="PNG of the map blended over the photo, base64")
    width: int
    height: int
    peak: PeakOut = Field(description="where the map is highest")


class ClassifyOut(BaseModel):
    label: str | None = Field(
        description="the most likely class; null when the photo is judged out of scope"
    )
    confidence: float = Field(ge=0, le=1)
    probabilities: dict[str, float] = Field(
        description="all classes for models with up to 10, else the top-k, best first"
    )
    model: ModelRefOut
    in_scope: bool | None = Field(
        None, description="present when the model has a scope and rejection is on"
    )
    top_guess: str | None = Field(None, description="the most likely class, even out of scope")
    scope: ScopeOut | None = None
    explanation: ExplanationOut | None = Field(None, description="with ?explain=true")


class ModelStateOut(BaseModel):
    name: str
    default: bool
    state: Literal["not_loaded", "loaded", "failed"]
    error: str | None = None
    load_seconds: float | None = None
    scope: str | None = Field(
        None, description="once loaded: 'on (METHOD)', or 'off: WHY' (served without a scope)"
    )


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    version: str
    models: list[ModelStateOut]


class ModelInfoOut(BaseModel):
    name: str
    default: bool
    state: Literal["not_loaded", "loaded", "failed"]
    classes: int | None = Field(None, description="number of classes (unknown until loaded for S3)")
    labels: list[str] | None = Field(None, description="the class names, for up to 20 classes")
    version: str | None = None
    sha256: str | None = None
    variant: str | None = None
    error: str | None = None
    scope: str | None = Field(None, description="once loaded: 'on (METHOD)' or 'off: WHY'")
    explain: bool | None = Field(None, description="once loaded: whether ?explain=true works")


class ModelsOut(BaseModel):
    default: str
    models: list[ModelInfoOut]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "bad input: empty, not an image, damaged image, no file in the form, two files",
        404: "no model of that name",
        413: "body or image over the limits (6 MB, 40 MP by default)",
        415: "unsupported content type or image format",
        422: "invalid query parameter",
        500: "unexpected error (details are logged, not returned)",
        503: "the model could not be loaded",
    }.items()
}

_BINARY = {"type": "string", "format": "binary"}
CLASSIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "an image: a multipart upload (any one field) or the raw bytes",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": _BINARY},
                    "required": ["file"],
                }
            },
            **{mime: {"schema": _BINARY} for mime in RAW_IMAGE_TYPES},
        },
    }
}
