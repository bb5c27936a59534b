"""The ``skyclass`` entry point as a user meets it: --version, completion, -q/-v, help at 80
columns, one-line usage errors, SKYCLASS_LOG_LEVEL checked (real subprocesses)."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.models import OptionInfo

from skyclass.cli import build_app
from tests.conftest import REPO_ROOT, run_cli

COMMANDS = [c.name for c in build_app().registered_commands]


def skyclass(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, **(env or {})}, timeout=120)


def test_every_area_command_is_registered() -> None:
    expected = "audit label-issues split train lr-find evaluate export serve predict"
    assert sorted(COMMANDS) == sorted(expected.split())


def test_version_is_written_once() -> None:
    import importlib.metadata

    init = (REPO_ROOT / "src" / "skyclass" / "__init__.py").read_text()
    (version,) = re.findall(r'^__version__ = "([^"]+)"$', init, re.M)
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in pyproject and "version" in pyproject["dynamic"]  # read from init
    out = skyclass("--version")
    assert out.returncode == 0 and out.stdout == f"skyclass {version}\n"
    assert importlib.metadata.version("skyclass") == version
    probe = "import skyclass, sys; print(skyclass.__version__, 'onnxruntime' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.split() == [version, "False"], done.stderr


def test_shell_completion_is_typers() -> None:
    # typer's switch for naming the shell instead of detecting the parent process's
    script = skyclass(
        "--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert script.returncode == 0 and "_SKYCLASS_COMPLETE" in script.stdout
    env = {"_SKYCLASS_COMPLETE": "complete_bash", "COMP_WORDS": "skyclass pre", "COMP_CWORD": "1"}
    assert skyclass(env=env).stdout.split() == ["predict"]
    env.update(COMP_WORDS="skyclass predict --fo", COMP_CWORD="2")
    assert skyclass(env=env).stdout.split() == ["--format"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_fits_80_columns_whole(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    out = skyclass(*args, env={"COLUMNS": "200"})  # the help caps itself at 80
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    assert not re.search(r"\w \.(\s|$)", out.stdout), out.stdout  # no "Model name ." gaps
    assert "…" not in out.stdout, out.stdout  # no cut names
    app = build_app()
    info = next((c for c in app.registered_commands if c.name == command), None)
    if info is None:
        return
    for param in inspect.signature(info.callback).parameters.values():
        if not isinstance(param.default, OptionInfo):
            continue
        decls = [n for d in param.default.param_decls or () for n in d.split("/")]
        decls = [d for d in decls if d.startswith("--")]
        for name in decls or ["--" + param.name.replace("_", "-")]:
            assert re.search(rf"(^|[ ,/]){re.escape(name)}\b", out.stdout), (name, out.stdout)


def test_no_arguments_is_the_help() -> None:
    out = skyclass()
    assert out.returncode == 0 and out.stdout.startswith("Usage: skyclass")
    assert skyclass("-h").stdout == out.stdout
    assert skyclass("predict", "-h").stdout == skyclass("predict", "--help").stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict"], ["Missing argument"]),
        (["predict", "x.jpg", "--bogus"], ["No such option: --bogus"]),
        (["nosuch"], ["No such command"]),
        (["predict", "x.jpg", "--top-k", "zero"], ["--top-k"]),
    ],
)
def test_usage_errors_are_one_line(args: list[str], words: list[str]) -> None:
    out = skyclass(*args)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_bogus_log_level_is_one_line_on_every_command(command: str) -> None:
    out = skyclass(command, "anything", env={"SKYCLASS_LOG_LEVEL": "BOGUS"})
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        "error: SKYCLASS_LOG_LEVEL='BOGUS' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL\n"
    )


def test_quiet_and_verbose_set_the_log_level(tmp_path: Path) -> None:
    probe = (
        "import logging, sys; from skyclass.cli import main; "
        "import skyclass.serve.commands as c; "
        "c.COMMANDS['predict'] = lambda: print(logging.getLogger().level); "
        "main(sys.argv[1:])"
    )

    def level(*args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args, "predict"],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert level() == str(30)  # WARNING
    assert level("-v") == str(20)
    assert level("-vv") == str(10)
    assert level("-q") == str(40)
    assert level(env={"SKYCLASS_LOG_LEVEL": "debug"}) == str(10)
    assert level("-q", env={"SKYCLASS_LOG_LEVEL": "debug"}) == str(40)


def _on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run ``skyclass ARGS`` with stderr on a pseudo-terminal; (exit, stdout, terminal text).
    SKYCLASS_PROGRESS=lines: the shared progress module's line form, readable in a test."""
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100", "SKYCLASS_PROGRESS": "lines"},
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the terminal closed with the process
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_predict_progress_on_a_terminal_only(tmp_path: Path) -> None:
    from tests.conftest import CLASSES, shared_images

    for cls in CLASSES:
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for photo in shared_images(cls, 3):
            (tmp_path / "photos" / cls / photo.name).write_bytes(photo.read_bytes())
    photos = str(tmp_path / "photos")
    code, out, tty = _on_a_terminal("predict", "--format", "csv", photos)
    assert code == 0 and len(out.splitlines()) == 13, tty
    assert "classifying: 12/12 img" in tty  # the progress, on the terminal
    assert "classifying" not in out  # never in the results
    code, out, tty = _on_a_terminal("-q", "predict", "--format", "csv", photos)
    assert code == 0 and len(out.splitlines()) == 13 and "classifying" not in tty
    piped = skyclass("predict", "--format", "csv", photos, env={"SKYCLASS_PROGRESS": "lines"})
    assert piped.returncode == 0 and piped.stderr == ""  # stderr a pipe: failures only
