"""Command line: options, output format and exit codes. Each command is one library call.

Every PkgchunkError is caught here, once, and printed as one line on stderr.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
from .errors import PkgchunkError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn PkgchunkError (and Ctrl-C) into one stderr line and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PkgchunkError as err:
            click.echo(f"pkgchunk: error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("pkgchunk: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pkgchunk")
def cli() -> None:
    """Rechunk OCI images along package boundaries so updates pull only what changed."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
