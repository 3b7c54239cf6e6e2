"""Options shared by several commands, as ``Annotated`` aliases (CLI flag = API keyword)."""

from __future__ import annotations

from typing import Annotated

import typer

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def _quiet(value: bool) -> bool:
    from mvc.cli import _output

    if value:
        _output.set_quiet(True)
    return value


Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", callback=_quiet, help="No progress bars or notes on stderr (errors still show).")
]
Remote = Annotated[str | None, typer.Option("--remote", "-r", help="Remote name (default: the default remote).")]
Jobs = Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel transfers.")]
Repo = Annotated[str, typer.Option("--repo", help="Path inside the repository (default: current directory).")]
Names = Annotated[list[str] | None, typer.Argument(help="Model names (default: every model).", show_default=False)]
TrustedKeys = Annotated[
    str | None,
    typer.Option("--trusted-keys", help="Directory of trusted ECDSA public keys (*.pub, *.pem); default: the repo setting."),
]
RequireSigned = Annotated[
    bool, typer.Option("--require-signed", help="Refuse versions no trusted key signed (checked before the work tree changes).")
]
