"""Entry point: ``mvc`` (console script) and ``python -m mvc``."""

from __future__ import annotations

from mvc.cli import core, history, remote  # noqa: F401  (registers the commands)
from mvc.cli import eval as _eval  # noqa: F401  (registers `mvc eval`)
from mvc.cli import exp as _exp  # noqa: F401  (issue 5: exp, hooks, registry)
from mvc.cli import gc as _gc  # noqa: F401  (registers `mvc gc`)
from mvc.cli import get as _get  # noqa: F401  (registers `mvc get`)
from mvc.cli import hooks as _hooks  # noqa: F401  (registers `mvc install-hooks`, `mvc resolve`)
from mvc.cli import merge as _merge  # noqa: F401  (registers `mvc merge`)
from mvc.cli import registry as _registry  # noqa: F401  (registers `mvc tag`, `mvc promote`, `mvc rename`)
from mvc.cli import run as _run  # noqa: F401  (registers `mvc run`)
from mvc.cli import storage as _storage  # noqa: F401  (registers `mvc storage`)
from mvc.cli import verify as _verify  # noqa: F401  (registers `mvc verify`, `mvc sign`)
from mvc.cli._app import app
from mvc.cli._memory import keep_freed_buffers


def run() -> None:
    """Run the CLI."""
    keep_freed_buffers()
    app()


if __name__ == "__main__":
    run()
