"""CLI commands of skyclass.data (heavy imports stay inside the commands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the skyclass CLI."""
