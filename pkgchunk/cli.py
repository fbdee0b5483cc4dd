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


@cli.command()
@click.argument("src")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@click.option(
    "--ignore-pkgdb-errors",
    is_flag=True,
    help="Skip a corrupt package database with a warning; its files count as unowned.",
)
@handle_errors
def packages(src: str, as_json: bool, ignore_pkgdb_errors: bool) -> None:
    """List SRC's package databases, each package's files and bytes, and what is unowned."""
    import json

    from .load import open_image
    from .ownership import collect
    from .report import build, format_table, to_json

    with open_image(src) as image:
        ownership = collect(image.tree, ignore_errors=ignore_pkgdb_errors)
        report = build(image.tree, ownership)
    for note in report.warnings:
        click.echo(f"pkgchunk: warning: {note}", err=True)
    if as_json:
        click.echo(json.dumps(to_json(report), indent=1, sort_keys=True))
    else:
        click.echo(format_table(report))


@cli.command("rechunk")
@click.argument("src")
@click.argument("dest")
@click.option(
    "--max-layers", type=click.IntRange(1, 1000), default=64, show_default=True,
    help="At most this many layers.",
)
@click.option(
    "--compression", type=click.Choice(["gzip", "zstd", "none"]), default="gzip",
    show_default=True,
)
@click.option(
    "--level", type=int, default=None, help="gzip 0-9 (default 6), zstd 1-22 (default 3)."
)
@click.option(
    "--source-date-epoch", type=click.IntRange(min=0), envvar="SOURCE_DATE_EPOCH", default=None,
    help="Clamp mtimes to this Unix time and date the image with it [env: SOURCE_DATE_EPOCH].",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Layers compressed at once (default: CPU count).")
@handle_errors
def rechunk_cmd(
    src: str, dest: str, max_layers: int, compression: str, level: int | None,
    source_date_epoch: int | None, jobs: int | None,
) -> None:
    """Rewrite image SRC as DEST: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF].

    Prints one row per written layer: name, files, compressed size, digest.
    """
    from .compress import check_level
    from .oci.write import WriteOptions
    from .rechunk import layer_table, rechunk

    try:
        check_level(compression, level)  # type: ignore[arg-type]
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--level") from None
    options = WriteOptions(
        compression=compression,  # type: ignore[arg-type]
        level=level,
        source_date_epoch=source_date_epoch,
        jobs=jobs,
    )
    result = rechunk(src, dest, max_layers=max_layers, options=options)
    click.echo(layer_table(result))


@cli.command("verify")
@click.argument("a")
@click.argument("b")
@click.option("--ignore-mtime", is_flag=True, help="Do not compare modification times.")
@click.option(
    "--mtime-clamp", type=int, default=None, metavar="EPOCH",
    help="B was written with SOURCE_DATE_EPOCH=EPOCH: expect min(mtime of A, EPOCH).",
)
@handle_errors
def verify_cmd(a: str, b: str, ignore_mtime: bool, mtime_clamp: int | None) -> None:
    """Compare images A and B path by path; exit 0 when they hold the same files, 1 when not."""
    from .verify import verify

    result = verify(a, b, ignore_mtime=ignore_mtime, mtime_clamp=mtime_clamp)
    if result.identical:
        click.echo(f"identical: {result.paths} paths")
        return
    shown = result.differences[:20]
    for diff in shown:
        click.echo(str(diff))
    more = len(result.differences) - len(shown)
    if more:
        click.echo(f"... and {more} more differences")
    sys.exit(1)


@cli.command("demo")
@click.argument("directory", default="demo-out", required=False)
@handle_errors
def demo_cmd(directory: str) -> None:
    """Build the demo image under DIRECTORY (default ./demo-out), rechunk it and verify."""
    from .demo import run_demo

    if not run_demo(directory, echo=click.echo):
        sys.exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
