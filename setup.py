"""Only what pyproject.toml cannot say: the bundled model folders travel inside the wheel.

``models/*/`` (each folder with a model.json) is copied into the built package as
``skyclass/models/NAME/``, where ``skyclass.serve.settings.default_model_dir`` finds it, so that
``pip install skyclass-*.whl`` serves and predicts out of the box (issue 18). An editable install
reads them from the clone's ``models/`` instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not MODELS.is_dir():
            return
        target = Path(self.build_lib) / "skyclass" / "models"
        for folder in sorted(MODELS.iterdir()):
            if (folder / "model.json").is_file():
                shutil.copytree(folder, target / folder.name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithModels})
