"""Training commands run without the train extra say in one line what to install (issue 18).

The serve-only environment is simulated by blocking the extra's modules in a fresh interpreter
(``sys.modules[name] = None`` makes importing it raise ModuleNotFoundError); the README walk test
(tests/readme) checks the same from a real serve-only venv made by scripts/serve.sh.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

BLOCK = (
    "import sys\n"
    "for m in ('torch', 'torchvision', 'sklearn', 'matplotlib', 'onnx'):\n"
    "    sys.modules[m] = None\n"
)


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "../shared/data/flying-objects", "--out", "{tmp}/audit"],
        ["label-issues", "no-such.csv", "--data-root", "nowhere", "--out", "{tmp}/l"],
        ["lr-find", "--config", "configs/flying-objects.toml"],
        ["train", "--config", "configs/flying-objects.toml"],
        ["export", "runs/flying-objects", "--out", "{tmp}/m"],
    ],
    ids=lambda a: a[0],
)
def test_a_missing_extra_is_one_line_naming_it(args: list[str], tmp_path) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    code = BLOCK + f"sys.argv = ['skyclass', *{args!r}]\nfrom skyclass.cli import main\nmain()\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith(f"error: skyclass {args[0]} needs the training extras (no module")
    assert lines[0].endswith("install them with: pip install -e '.[train]'")
    assert list(tmp_path.iterdir()) == []


def test_help_still_works_without_the_extra() -> None:
    code = (
        BLOCK
        + "sys.argv = ['skyclass', 'train', '--help']\nfrom skyclass.cli import main\nmain()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout


def test_other_missing_modules_are_not_hidden() -> None:
    from skyclass.cli import missing_extra_message

    assert missing_extra_message(["serve"], ModuleNotFoundError("x", name="numpy")) is None
    assert missing_extra_message(["train"]) is None  # this environment has the extra
    message = missing_extra_message(["-v", "train"], ModuleNotFoundError("x", name="torch.nn"))
    assert message is not None and message.startswith("skyclass train needs the training extras")
