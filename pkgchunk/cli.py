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


def _plan_options(f: F) -> F:
    """Options shared by ``rechunk`` and ``plan``."""
    opts = [
        click.option("--rules", "rules", default=None, metavar="PATH|NAME",
                     help="Rules file or shipped name (fedora-bootc, debian, generic);"
                     " default: by the image's package databases."),
        click.option("--max-layers", type=click.IntRange(1, 1000), default=None,
                     help="At most this many layers [default: the rules' max_layers, 64]."),
        click.option("--prev", default=None, metavar="REF",
                     help="Previous pkgchunk build to stay stable against"
                     " [default: the image already at DEST's tag]."),
        click.option("--fresh", is_flag=True,
                     help="Ignore the previous build's layout (its history still counts)."),
        click.option("--mtime", "mtime_policy", type=click.Choice(["clamp", "keep"]),
                     default="clamp", show_default=True,
                     help="clamp: owned files to their package's payload time (stable layers);"
                     " keep: as in the input."),
        click.option("--ignore-pkgdb-errors", is_flag=True,
                     help="Skip a corrupt package database with a warning."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _warn(warnings: tuple[str, ...]) -> None:
    for note in warnings:
        click.echo(f"pkgchunk: warning: {note}", err=True)


@cli.command("rechunk")
@click.argument("src")
@click.argument("dest")
@_plan_options
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
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@handle_errors
def rechunk_cmd(
    src: str, dest: str, rules: str | None, max_layers: int | None, prev: str | None,
    fresh: bool, mtime_policy: str, ignore_pkgdb_errors: bool, compression: str,
    level: int | None, source_date_epoch: int | None, jobs: int | None, as_json: bool,
) -> None:
    """Rewrite image SRC as DEST (oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE).

    Plans layers by package, stable against the previous build, and prints one row per
    layer: name, compressed size, change probability, packages, digest.
    """
    import json

    from .compress import check_level
    from .oci.write import WriteOptions
    from .rechunk import PlanOptions, plan_table, rechunk_packages
    from .report_json import rechunk_json

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
    popts = PlanOptions(
        rules=rules, max_layers=max_layers, prev=prev, fresh=fresh,
        mtime_policy=mtime_policy,  # type: ignore[arg-type]
        ignore_pkgdb_errors=ignore_pkgdb_errors,
    )
    result = rechunk_packages(src, dest, popts, options)
    _warn(result.warnings)
    if as_json:
        click.echo(json.dumps(rechunk_json(result), indent=1, sort_keys=True))
    else:
        if result.previous:
            click.echo(f"previous build: {result.previous}")
        click.echo(plan_table(result.planned, result.write))


@cli.command("plan")
@click.argument("src")
@_plan_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@handle_errors
def plan_cmd(
    src: str, rules: str | None, max_layers: int | None, prev: str | None, fresh: bool,
    mtime_policy: str, ignore_pkgdb_errors: bool, as_json: bool,
) -> None:
    """Show the layers `rechunk` would write for SRC, without writing anything."""
    import json

    from .rechunk import PlanOptions, plan_only, plan_table
    from .report_json import plan_json

    popts = PlanOptions(
        rules=rules, max_layers=max_layers, prev=prev, fresh=fresh,
        mtime_policy=mtime_policy,  # type: ignore[arg-type]
        ignore_pkgdb_errors=ignore_pkgdb_errors,
    )
    planned = plan_only(src, popts)
    _warn(planned.ownership.warnings + planned.outcome.warnings)
    if as_json:
        click.echo(json.dumps(plan_json(planned), indent=1, sort_keys=True))
    else:
        click.echo(plan_table(planned))


@cli.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@handle_errors
def diff_cmd(old: str, new: str, as_json: bool) -> None:
    """Bytes a client holding OLD pulls to get NEW, and which groups changed."""
    import json

    from .diff import diff, to_json
    from .rechunk import human_size

    result = diff(old, new)
    if as_json:
        click.echo(json.dumps(to_json(result), indent=1, sort_keys=True))
        return
    for lc in result.layers:
        mark = "pull" if lc.pulled else "have"
        click.echo(f"{mark}  {human_size(lc.size):>10}  {lc.name}")
    for g in result.groups:
        click.echo(f"changed  {g.group}: {g.old or '(new)'} -> {g.new or '(removed)'}")
    share = 100.0 * result.pull_bytes / result.total_bytes if result.total_bytes else 0.0
    click.echo(
        f"pull {human_size(result.pull_bytes)} of {human_size(result.total_bytes)}"
        f" ({share:.1f}%); Docker classic store: {human_size(result.prefix_pull_bytes)}"
    )


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
