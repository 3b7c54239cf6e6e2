"""The typer app and the one decorator that registers commands behind the error funnel."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from mvc.errors import EXIT_INTERRUPTED, EXIT_OTHER, EXIT_USAGE, MvcError

F = TypeVar("F", bound=Callable[..., Any])

# A reader that went away (`mvc log | head`) ends mvc as it ends git: quietly, with the
# shell's code for a process stopped by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def _usage_error(exc: Exception) -> int:
    """Print one of click's usage errors (bad option, missing argument ...) in mvc's voice.

    ``error: <what>`` and ``hint: run `mvc CMD --help```, exit 2; typer's four-line
    ``Usage: ... Error:`` box would be the only output in another format (issue 17).
    """
    from mvc.cli import _output

    names: list[str] = []
    ctx = getattr(exc, "ctx", None)
    while ctx is not None and ctx.parent is not None:  # the root's name is how mvc was started
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    command = " ".join(["mvc", *names])
    param = getattr(exc, "param", None)
    if type(exc).__name__ == "MissingParameter" and getattr(param, "param_type_name", "") == "argument":
        message = f"missing argument {param.name.upper()}"  # type: ignore[union-attr]  # as the usage line writes it
    else:
        message = str(exc.format_message()).strip().rstrip(".")  # type: ignore[attr-defined]
        message = message[:1].lower() + message[1:]
    _output.error(message, f"run `{command} --help` for its arguments and options")
    return int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)


class MvcGroup(TyperGroup):
    """The top-level command group: one error voice for usage errors, quiet broken pipes."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run the CLI; in standalone mode (the console script, CliRunner) exit with mvc's code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **kwargs)
        from mvc.cli import _output

        _output.set_quiet(False)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **kwargs)
        except typer.Abort:
            _output.error("aborted", None)
            code = EXIT_OTHER
        except Exception as exc:  # click's usage errors (typer re-exports only BadParameter)
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `mvc` / `mvc exp`: the help
                exc.show()  # type: ignore[attr-defined]
                code = exc.exit_code  # type: ignore[attr-defined]
            else:
                code = _usage_error(exc)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _output.silence_stdout()
            code = EXIT_BROKEN_PIPE
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=MvcGroup,
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
        except BrokenPipeError:
            from mvc.cli import _output

            _output.silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except (MvcError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001  (the funnel: every error becomes one line)
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
