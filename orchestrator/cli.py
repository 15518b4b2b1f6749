"""The `fmx` command line: validate, sweep, train, eval, tables, report, ui."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Flow Matching ablations at any scale.")


@app.command()
def version() -> None:
    """Print fmx's version."""
    from importlib.metadata import version as _version

    typer.echo(_version("fmx"))


if __name__ == "__main__":
    app()
