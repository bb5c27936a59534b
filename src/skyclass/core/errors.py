"""Errors a request can cause; each knows its HTTP status and says what was wrong, never how."""

from __future__ import annotations


class ImageError(ValueError):
    """The bytes given are not an image we can classify. Maps to a 4xx."""

    status: int = 400
    code: str = "invalid_image"


class EmptyImage(ImageError):
    code = "empty_body"


class NotAnImage(ImageError):
    code = "not_an_image"


class UnsupportedFormat(ImageError):
    status = 415
    code = "unsupported_format"


class CorruptImage(ImageError):
    code = "corrupt_image"


class ImageTooLarge(ImageError):
    status = 413
    code = "image_too_large"


class DecodeBudgetExceeded(ImageTooLarge):
    """Decoding would take more memory than a request may use (a small file, a huge bitmap)."""

    code = "decode_budget_exceeded"


class ModelUnavailable(RuntimeError):
    """The model could not be loaded (missing, corrupt, wrong hash, S3 failure). Maps to 503."""

    status: int = 503
    code: str = "model_unavailable"
