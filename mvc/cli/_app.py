"""The typer app and the one decorator that registers commands behind the error funnel."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mvc.errors import EXIT_INTERRUPTED, EXIT_OTHER, MvcError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="mvc",
    help="mvc: model version control. Version model weights with git, store them with DVC.\n\n"
    "Examples:\n\n  mvc init\n\n  mvc add models/net.safetensors --metric acc=0.91\n\n"
    "  mvc commit -m 'net v1'\n\n  mvc push",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _report(exc: BaseException) -> int:
    """Print one error (and hint) to stderr; return the exit code."""
    from mvc.cli import _output

    if isinstance(exc, MvcError):
        _output.error(exc.message, exc.hint)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        _output.error("interrupted", None)
        return EXIT_INTERRUPTED
    _output.error(
        f"unexpected {type(exc).__name__}: {exc}",
        "this is a bug in mvc: please report it with the output of the command run with MVC_DEBUG=1",
    )
    return EXIT_OTHER


def funnel(fn: F) -> F:
    """Run a command body, turning every error into one line on stderr and an exit code.

    A traceback is printed only with ``MVC_DEBUG=1``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (MvcError, KeyboardInterrupt, Exception) as exc:
            if os.environ.get("MVC_DEBUG") == "1":
                import traceback

                traceback.print_exc(file=sys.stderr)
            raise typer.Exit(_report(exc)) from None

    return wrapper  # type: ignore[return-value]


def command(group: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register ``fn`` as a command of ``group`` behind :func:`funnel`."""

    def register(fn: F) -> F:
        group.command(name, **kwargs)(funnel(fn))
        return fn

    return register
