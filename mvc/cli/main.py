"""Entry point: ``mvc`` (console script) and ``python -m mvc``."""

from __future__ import annotations

from mvc.cli import core, history, remote  # noqa: F401  (registers the commands)
from mvc.cli._app import app


def run() -> None:
    """Run the CLI."""
    app()


if __name__ == "__main__":
    run()
