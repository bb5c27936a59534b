"""``skyclass predict`` behind the command: find the images, load the model, classify each file
(a bar on a terminal), print rows in the chosen format and each failure as one stderr line."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyclass.core.errors import ImageError, ModelUnavailable
from skyclass.core.image_files import FoundImages, find_images
from skyclass.serve.predict_output import PredictOutput, Row, printable

if TYPE_CHECKING:
    from skyclass.api import Model
    from skyclass.core.predictor import Prediction


class PredictInputError(ValueError):
    """A path or model that cannot be used: one line for the user, exit 2."""


@dataclass(frozen=True)
class PredictOptions:
    top_k: int | None = None
    reject: bool = True
    explain: Path | None = None
    bar: bool = True


def load_for_predict(
    paths: list[Path], model: str | None, variant: str | None, explain: Path | None = None
) -> tuple[FoundImages, Model]:
    """The images under ``paths`` and the model to classify them with; PredictInputError for a
    missing path, a missing or broken model, a model that cannot explain, or nothing to do."""
    from skyclass.api import Model, resolve_model_dir
    from skyclass.core.predictor import Predictor

    try:
        found = find_images(paths)
    except FileNotFoundError as exc:
        raise PredictInputError(f"no such file or folder: {printable(str(exc.filename))}") from None
    try:
        loaded = Model(Predictor(resolve_model_dir(model), variant=variant))
    except ModelUnavailable as exc:
        raise PredictInputError(str(exc)) from None
    if not found.files and not found.unreadable:
        raise PredictInputError("no image files found in the given folders")
    if explain is not None and not loaded.predictor.can_explain:
        name = loaded.predictor.ref.name
        raise PredictInputError(f"model {name} cannot explain (no 'cam' output; re-export it)")
    if explain is not None and explain.exists() and not explain.is_dir():
        raise PredictInputError(f"--explain {explain} exists and is not a folder")
    return found, loaded


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_overlay(folder: Path, photo: Path, result: Prediction) -> Path:
    """``folder/<photo stem>.cam.png``, written atomically; an existing file is never replaced
    (a numbered name is taken instead)."""
    assert result.explanation is not None
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{photo.stem}.cam.png"
    n = 1
    while out.exists():
        n += 1
        out = folder / f"{photo.stem}.{n}.cam.png"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(result.explanation.png)
    os.replace(tmp, out)
    return out


def _row(path: Path, result: Prediction, overlay: Path | None) -> Row:
    extra: dict[str, Any] = {}
    if result.scope is not None:
        extra |= {"in_scope": result.in_scope, "top_guess": result.top_guess}
        extra["scope"] = result.scope.to_dict()
    if overlay is not None:
        extra["explanation"] = str(overlay)
    return Row(
        str(path), result.label, result.confidence, result.probabilities, result.top_guess, extra
    )


def classify_files(found: FoundImages, model: Model, fmt: str, options: PredictOptions) -> int:
    """Classify every file found, printing as ``fmt``; returns how many files and folders failed
    (each said on stderr)."""
    from skyclass.progress import progress_bar
    from skyclass.serve.settings import ALL_CLASSES_UP_TO

    for folder, reason in found.unreadable:
        _say(f"{printable(str(folder))}: folder skipped, cannot be read ({reason})")
    n = len(model.labels)
    k = min(options.top_k or (n if n <= ALL_CLASSES_UP_TO else 5), n)
    ref = model.predictor.ref
    out = PredictOutput(fmt, model.labels, f"{ref.name} {ref.version} ({ref.variant})", k)
    failed = 0
    # The bar only on a terminal: piped, stderr carries nothing but the failures.
    shown = options.bar and len(found.files) > 1 and sys.stderr.isatty()
    explain = options.explain is not None
    bar = progress_bar(
        desc="classifying", total=len(found.files), unit="img", enabled=shown, leave=True
    )
    with bar as b:
        for path in found.files:
            try:
                result = model.predict(path, top_k=k, reject=options.reject, explain=explain)
                overlay = write_overlay(options.explain, path, result) if options.explain else None
            except (ImageError, OSError) as exc:
                failed += 1
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                _say(f"{printable(str(path))}: {reason}")
            else:
                out.add(_row(path, result, overlay))
            b.update(1)
    out.close()
    return failed + len(found.unreadable)
