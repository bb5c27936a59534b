"""The Python API: ``from skyclass import load_model``.

    model = load_model()                        # the bundled flagship model
    model = load_model("imagenet-mobilenet-v2")  # a bundled model by name, or any model folder
    model.predict("photo.jpg").label             # a path, bytes, a PIL image or a numpy array
    model.predict_batch([...])                   # one Prediction per image, in order

Torch-free: ONNX Runtime over a model folder (``skyclass.core.predictor.Predictor``), the same
preprocessing as the API. Bad images raise ``skyclass.core.errors.ImageError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skyclass.core.bundle import MANIFEST
from skyclass.core.errors import ModelUnavailable
from skyclass.core.image_files import read_image_file
from skyclass.core.predictor import Prediction, Predictor

if TYPE_CHECKING:
    from PIL import Image


def resolve_model_dir(model: str | Path | None = None) -> Path:
    """A model folder: ``None`` for the bundled default, a folder path, or the name of a folder
    beside the default one (``imagenet-mobilenet-v2``). Raises ModelUnavailable if none."""
    from skyclass.serve.settings import default_model_dir

    if model is None:
        folder = default_model_dir()
        if not folder.is_dir():
            raise ModelUnavailable(f"model folder not found: {folder}")
        return folder
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = str(model)
    named = default_model_dir().parent / name
    if "/" not in name and "\\" not in name and (named / MANIFEST).is_file():
        return named
    raise ModelUnavailable(f"model folder not found: {model}")


class Model:
    """A loaded model folder. Create once (``load_model``) and reuse: loading takes ~0.1-1 s."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def __repr__(self) -> str:
        ref = self.predictor.ref
        n = len(self.labels)
        return f"<skyclass.Model {ref.name} {ref.version} ({ref.variant}), {n} classes>"

    @property
    def labels(self) -> tuple[str, ...]:
        return self.predictor.labels

    @property
    def name(self) -> str:
        return self.predictor.ref.name

    def encoded(self, image: Any) -> bytes:
        """The bytes ``predict`` classifies: a file's (checked before it is read), bytes as
        given, a PIL image or numpy array as a lossless PNG (taken as given: no EXIF rotation)."""
        if isinstance(image, str | Path):
            return read_image_file(image, self.predictor.limits)
        if isinstance(image, bytes | bytearray | memoryview):
            return bytes(image)
        if isinstance(image, np.ndarray):
            image = _array_to_image(image)
        if not hasattr(image, "mode") or not hasattr(image, "save"):
            raise TypeError(
                f"predict takes a path, bytes, a PIL image or a numpy array, not "
                f"{type(image).__name__}"
            )
        import io

        buf = io.BytesIO()
        if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            image = image.convert("RGB")  # a mode PNG cannot hold (CMYK, F, ...)
        image.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    def predict(
        self, image: Any, top_k: int | None = None, *, reject: bool = True, explain: bool = False
    ) -> Prediction:
        """Classify one image: a path, encoded bytes, a PIL image, or a numpy array (HxW gray,
        HxWx3 RGB or HxWx4 RGBA, uint8). ``top_k`` classes in ``probabilities`` (default: the
        model's); ``reject``: judge out-of-scope photos when the model has a scope file (label
        None); ``explain``: add a class activation map overlay."""
        return self.predictor.predict(self.encoded(image), top_k, reject=reject, explain=explain)

    def predict_batch(
        self, images: Sequence[Any], top_k: int | None = None, *, reject: bool = True
    ) -> list[Prediction]:
        """Classify several images; one Prediction per image, in order (the same answers as
        ``predict``, one image at a time). The first bad image raises its error."""
        return [self.predict(image, top_k, reject=reject) for image in images]


def _array_to_image(array: np.ndarray) -> Image.Image:
    from PIL import Image

    if array.dtype != np.uint8:
        raise TypeError(f"a numpy image must be uint8 (0-255), not {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(array))
    raise TypeError(f"a numpy image must be HxW, HxWx3 or HxWx4, not shape {array.shape}")


def load_model(
    model: str | Path | None = None, *, variant: str | None = None, threads: int | None = None
) -> Model:
    """Load a model folder for prediction (the bundled flagship by default).

    ``model``: a folder path or a bundled model's name; ``variant``: ``fp32`` or ``int8`` (default:
    the folder's own); ``threads``: ONNX Runtime threads (default: its own choice).
    Raises ModelUnavailable when the folder is missing or does not load.
    """
    return Model(Predictor(resolve_model_dir(model), variant=variant, threads=threads))
