"""skyclass: from a folder of photos to a serverless image-classification API.

``from skyclass import load_model`` gives the Python API (``skyclass.api``); nothing is imported
or computed until it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skyclass.api import Model, load_model

# The one place the version is written: pyproject.toml reads it from here (setuptools' dynamic
# version), and the Lambda artifact, which carries this source without package metadata, too.
__version__ = "0.1.0"

__all__ = ["Model", "__version__", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "Model"):
        from skyclass import api

        return getattr(api, name)
    raise AttributeError(f"module 'skyclass' has no attribute {name!r}")
