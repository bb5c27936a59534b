"""The README's command lines, read as a newcomer runs them in a fresh clone (fast checks)."""

from __future__ import annotations

import shlex
import subprocess

from tests.conftest import REPO_ROOT


def _readme_commands(verb: str) -> list[list[str]]:
    """Every ``skyclass VERB ...`` line of the README's code blocks, as argv (comments dropped)."""
    lines, in_block = [], False
    for line in (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block and line.startswith(f"skyclass {verb} "):
            lines.append(shlex.split(line, comments=True))
    return lines


def test_readme_exports_write_where_a_fresh_clone_has_nothing() -> None:
    """`export` refuses an existing folder without --force: the README's export lines must name a
    folder that git does not ship (the bundled models/ are in git), so they work as written."""
    commands = _readme_commands("export")
    assert commands, "the README has no export line"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for argv in commands:
        out = argv[argv.index("--out") + 1].rstrip("/")
        assert "--force" not in argv, argv
        assert not any(f == out or f.startswith(f"{out}/") for f in tracked), (
            f"README line {' '.join(argv)!r} exports onto {out}, which a fresh clone already has"
        )
