"""The typer command-line interface: parse, call :mod:`mvc.api`, render."""
