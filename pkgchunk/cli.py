"""Command line: options, output format and exit codes. Each command is one library call.

Every PkgchunkError is caught here, once, and printed as one line on stderr. stdout
carries only the result (a table, or the ``--json`` document); progress, warnings and
debug logging go to stderr.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pkgchunk import __version__, progress
from pkgchunk.errors import PkgchunkError
from pkgchunk.plan.rules import DEFAULT_MAX_LAYERS, MAX_LAYERS_LIMIT

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("pkgchunk")


def handle_errors(fn: F) -> F:
    """Turn PkgchunkError (and Ctrl-C) into one stderr line and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PkgchunkError as err:
            for line in str(err).splitlines() or [""]:  # a rules file: one line per problem
                click.echo(f"pkgchunk: error: {line}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("pkgchunk: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class _ClickHandler(logging.Handler):
    """Log records as ``pkgchunk: LEVEL: message`` on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            progress.break_line()
            click.echo(f"pkgchunk: {record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:
            self.handleError(record)


def _setup_logging(quiet: bool, verbose: int) -> None:
    for handler in [h for h in log.handlers if isinstance(h, _ClickHandler)]:
        log.removeHandler(handler)
    log.addHandler(_ClickHandler())
    log.propagate = False
    log.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING)


def _quiet() -> bool:
    return bool(click.get_current_context().meta.get("pkgchunk.quiet"))


def _verbose() -> bool:
    """-v: tables print every name instead of ``a,b,+N more``."""
    return bool(click.get_current_context().meta.get("pkgchunk.verbose"))


def _columns() -> int | None:
    """The terminal's width when stdout is one (tables fit it); None in a pipe, where
    tables are the same whatever the width."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def _say(text: str) -> None:
    """Human output on stdout, unless --quiet."""
    if not _quiet():
        click.echo(text)


def _print_json(doc: object) -> None:
    click.echo(json.dumps(doc, indent=1, sort_keys=True))


def _output_options(f: F) -> F:
    """-q, -v, --progress: how much the command says besides its result."""

    @functools.wraps(f)
    def wrapper(*args: Any, quiet: bool, verbose: int, show_progress: bool | None,
                **kwargs: Any) -> Any:
        _setup_logging(quiet, verbose)
        click.get_current_context().meta["pkgchunk.quiet"] = quiet
        click.get_current_context().meta["pkgchunk.verbose"] = verbose > 0
        on = sys.stderr.isatty() if show_progress is None else show_progress
        with progress.reporting(sys.stderr if on and not quiet else None):
            return f(*args, **kwargs)

    opts = [
        click.option("-q", "--quiet", is_flag=True,
                     help="Print only errors and the result's exit code (and --json, if asked)."),
        click.option("-v", "--verbose", count=True,
                     help="Debug logging on stderr (skopeo commands, previous build, timings)."),
        click.option("--progress/--no-progress", "show_progress", default=None,
                     help="Progress of long steps on stderr [default: when it is a terminal]."),
    ]
    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper  # type: ignore[return-value]


def _transport_options(f: F) -> F:
    """What passes through to skopeo/podman for containers-storage: and docker://."""

    @functools.wraps(f)
    def wrapper(*args: Any, storage_root: str | None, storage_runroot: str | None,
                storage_driver: str | None, src_tls_verify: bool | None,
                dest_tls_verify: bool | None, authfile: str | None, creds: str | None,
                mount: bool, **kwargs: Any) -> Any:
        from pkgchunk.transport.skopeo import TransportOptions, transport_options

        opts = TransportOptions(
            storage_root=storage_root, storage_runroot=storage_runroot,
            storage_driver=storage_driver, src_tls_verify=src_tls_verify,
            dest_tls_verify=dest_tls_verify, authfile=authfile, creds=creds, mount=mount,
        )
        with transport_options(opts):
            return f(*args, **kwargs)

    tls: dict[str, Any] = {"type": click.BOOL, "default": None, "is_flag": False,
                           "flag_value": True, "metavar": "[BOOL]"}
    opts = [
        click.option("--storage-root", metavar="DIR", default=None,
                     help="containers-storage: store root (podman --root)."),
        click.option("--storage-runroot", metavar="DIR", default=None,
                     help="containers-storage: run root (podman --runroot)."),
        click.option("--storage-driver", metavar="NAME", default=None,
                     help="containers-storage: driver (overlay, vfs, ...)."),
        click.option("--src-tls-verify", **tls,
                     help="docker:// inputs: require HTTPS and verify certificates"
                     " [default: true]; =false for a plain-HTTP registry."),
        click.option("--dest-tls-verify", **tls,
                     help="docker:// outputs (and DEST as previous build): as --src-tls-verify."),
        click.option("--authfile", metavar="FILE", default=None,
                     help="Registry credentials file (as podman login writes it)."),
        click.option("--creds", metavar="USER[:PASSWORD]", default=None,
                     help="Registry credentials (visible to other users in ps: prefer"
                     " --authfile)."),
        click.option("--mount", is_flag=True,
                     help="Read containers-storage: inputs in place with 'podman image"
                     " mount' (root; no copy, no decompression)."),
    ]
    for opt in reversed(opts):
        wrapper = opt(wrapper)
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
@_transport_options
@_output_options
@handle_errors
def packages(src: str, as_json: bool, ignore_pkgdb_errors: bool) -> None:
    """List SRC's package databases, each package's files and bytes, and what is unowned."""
    from pkgchunk.io import open_image
    from pkgchunk.pkgdb.ownership import collect
    from pkgchunk.render import packages_json, packages_report, packages_table

    with open_image(src) as image:
        ownership = collect(image.tree, ignore_errors=ignore_pkgdb_errors)
        report = packages_report(image.tree, ownership)
    _warn(report.warnings)
    if as_json:
        _print_json(packages_json(report))
    else:
        _say(packages_table(report))


def _plan_options(f: F) -> F:
    """Options shared by ``rechunk`` and ``plan``."""
    opts = [
        click.option("--rules", "rules", default=None, metavar="PATH|NAME",
                     help="Rules file or shipped name (fedora-bootc, debian, generic);"
                     " default: by the image's package databases."),
        click.option("--max-layers", type=click.IntRange(1, MAX_LAYERS_LIMIT), default=None,
                     help="At most this many layers [default: the rules' max_layers, "
                          f"{DEFAULT_MAX_LAYERS}]."),
        click.option("--prev", default=None, metavar="REF",
                     help="Previous pkgchunk build to stay stable against"
                     " [default: the image already at DEST's tag]."),
        click.option("--fresh", is_flag=True,
                     help="Plan as a build without a previous one does (layout and history);"
                     " the history is still recorded."),
        click.option("--mtime", "mtime_policy", type=click.Choice(["clamp", "keep"]),
                     default="clamp", show_default=True,
                     help="clamp: owned files to their package's payload time (stable layers);"
                     " keep: as in the input."),
        click.option("--ignore-pkgdb-errors", is_flag=True,
                     help="Skip a corrupt package database with a warning."),
        click.option("--keep-base", "keep_base", default=None, metavar="REF|N",
                     help="Keep the base image REF's layers (or SRC's bottom N layers) byte"
                     " for byte and plan only what is above them; --max-layers then"
                     " bounds the layers above the base."),
        click.option("--patch-layers", "patch_layers", type=click.IntRange(min=0),
                     default=None, metavar="K",
                     help="Keep K of --max-layers free for patches: a build over a previous one"
                     " is then written as its layers byte for byte plus one layer of what"
                     " changed, while a slot is free and the patches hold under half the"
                     " image's bytes; after that every layer is planned again"
                     " [default: the rules' patch_layers, 0 in the shipped rules]."),
        click.option("--keep-sysroot", is_flag=True,
                     help="bootc images: keep the ostree object store under /sysroot/ostree"
                     " and the ostree.commit/ostree.final-diffid labels (left out by default)."),
        click.option("--prune", "prune", multiple=True, metavar="PATH",
                     help="Leave PATH and everything below it out of the output (repeatable);"
                     " PATH/ keeps the directory itself. Recorded for verify."),
        click.option("--label", "label_edits", multiple=True, metavar="KEY=VALUE|KEY-",
                     help="Set (KEY=VALUE) or remove (KEY-) a config label (repeatable)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _note(notes: tuple[str, ...]) -> None:
    """Informational lines on stderr (never on stdout: it carries the result)."""
    if not _quiet():
        for note in notes:
            progress.break_line()
            click.echo(f"pkgchunk: {note}", err=True)


def _warn(warnings: tuple[str, ...]) -> None:
    for note in warnings:
        log.warning("%s", note)


def _split_images(images: tuple[str, ...]) -> tuple[list[str], str]:
    if len(images) < 2:
        raise click.UsageError("need SRC and DEST (several SRC are stacked in order)")
    return list(images[:-1]), images[-1]


@cli.command("rechunk")
@click.argument("images", nargs=-1, required=True, metavar="SRC... DEST")
@_plan_options
@click.option(
    "--compression", type=click.Choice(["gzip", "zstd", "zstd:chunked", "none"]), default="gzip",
    show_default=True,
)
@click.option(
    "--level", type=int, default=None,
    help="gzip 0-9 (default 6), zstd and zstd:chunked 1-22 (default 3).",
)
@click.option(
    "--source-date-epoch", type=click.IntRange(min=0), envvar="SOURCE_DATE_EPOCH", default=None,
    help="Clamp mtimes to this Unix time and date the image with it [env: SOURCE_DATE_EPOCH].",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Layers compressed at once (default: CPU count).")
@click.option("--no-carry", is_flag=True,
              help="Do not give entries identical to the previous build's its older mtime.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@click.option(
    "--sbom", nargs=2, type=(click.Choice(["spdx-json"]), click.Path(dir_okay=False)),
    default=None, metavar="FORMAT FILE",
    help="Also write an SBOM of the image's packages: --sbom spdx-json FILE (SPDX 2.3).",
)
@_transport_options
@_output_options
@handle_errors
def rechunk_cmd(
    images: tuple[str, ...], rules: str | None, max_layers: int | None, prev: str | None,
    fresh: bool, mtime_policy: str, ignore_pkgdb_errors: bool, keep_base: str | None,
    patch_layers: int | None, keep_sysroot: bool, prune: tuple[str, ...],
    label_edits: tuple[str, ...],
    compression: str,
    level: int | None, source_date_epoch: int | None, jobs: int | None, no_carry: bool,
    as_json: bool, sbom: tuple[str, str] | None,
) -> None:
    """Rewrite image SRC as DEST; several SRC are stacked in order and merged into one.

    DEST: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF],
    containers-storage:NAME or docker://REF. Plans layers by package, stable against
    the previous build, and prints one row per layer: name, compressed size, change
    probability, packages, digest.
    """
    srcs, dest = _split_images(images)
    if sbom is not None:
        from pkgchunk.sbom import check_target

        check_target(sbom[1])  # before the long work, not after
    from pkgchunk.oci.compress import check_level
    from pkgchunk.oci.write import WriteOptions
    from pkgchunk.rechunk import PlanOptions, rechunk_packages
    from pkgchunk.render import plan_table, rechunk_json

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
        ignore_pkgdb_errors=ignore_pkgdb_errors, keep_base=keep_base, carry=not no_carry,
        patch_layers=patch_layers,
        keep_sysroot=keep_sysroot, prune=prune, labels=label_edits,
    )
    result = rechunk_packages(srcs if len(srcs) > 1 else srcs[0], dest, popts, options)
    _note(result.planned.notes)
    _warn(result.warnings)
    if sbom is not None:
        from pkgchunk.sbom import spdx_document, write_json

        doc = spdx_document(
            result.planned.ownership, name=result.write.ref,
            manifest_digest=result.write.manifest_digest, os_release=result.os_release,
            created=source_date_epoch,
        )
        write_json(sbom[1], doc)
        log.info("%s: SPDX document of %d packages", sbom[1], len(doc["packages"]))
    if as_json:
        _print_json(rechunk_json(result))
    else:
        if result.previous:
            _say(f"previous build: {result.previous}")
        _say(plan_table(result.planned, result.write, verbose=_verbose(), columns=_columns()))


@cli.command("plan")
@click.argument("srcs", nargs=-1, required=True, metavar="SRC...")
@_plan_options
@click.option("--dest", default=None, metavar="DEST",
              help="The DEST rechunk would write: its image is the previous build (unless"
              " --prev), exactly as rechunk finds it.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@_transport_options
@_output_options
@handle_errors
def plan_cmd(
    srcs: tuple[str, ...], rules: str | None, max_layers: int | None, prev: str | None,
    fresh: bool, mtime_policy: str, ignore_pkgdb_errors: bool, keep_base: str | None,
    patch_layers: int | None, keep_sysroot: bool, prune: tuple[str, ...],
    label_edits: tuple[str, ...],
    dest: str | None,
    as_json: bool,
) -> None:
    """Show the layers `rechunk` would write for SRC (several: stacked), writing nothing.

    Without --dest or --prev the plan has no previous build (rechunk's DEST tag is not
    known here): give --dest DEST to see what `rechunk SRC DEST` will do."""
    from pkgchunk.rechunk import PlanOptions, plan_only
    from pkgchunk.render import plan_json, plan_table

    popts = PlanOptions(
        rules=rules, max_layers=max_layers, prev=prev, fresh=fresh,
        mtime_policy=mtime_policy,  # type: ignore[arg-type]
        ignore_pkgdb_errors=ignore_pkgdb_errors, keep_base=keep_base, patch_layers=patch_layers,
        keep_sysroot=keep_sysroot, prune=prune, labels=label_edits,
    )
    planned = plan_only(srcs[0] if len(srcs) == 1 else list(srcs), popts, dest)
    _note(planned.notes)
    _warn(planned.tree.warnings + planned.ownership.warnings + planned.outcome.warnings
          + planned.warnings)
    if as_json:
        _print_json(plan_json(planned))
    else:
        if planned.previous:
            _say(f"previous build: {planned.previous}")
        _say(plan_table(planned, verbose=_verbose(), columns=_columns()))


@cli.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@_transport_options
@_output_options
@handle_errors
def diff_cmd(old: str, new: str, as_json: bool) -> None:
    """Bytes a client holding OLD pulls to get NEW, and which groups changed in which layer.

    Reads manifests and configs only (for docker:// through skopeo inspect).
    """
    from pkgchunk.diff import diff
    from pkgchunk.render import diff_json, diff_text

    result = diff(old, new)
    if as_json:
        _print_json(diff_json(result))
    else:
        _say(diff_text(result))


@cli.command("verify")
@click.argument("a", metavar="INPUT")
@click.argument("b", metavar="OUTPUT")
@click.option(
    "--symmetric", is_flag=True,
    help="Compare two arbitrary images: no build record excuses anything, every label counts.",
)
@click.option(
    "--source-date-epoch", type=click.IntRange(min=0), envvar="SOURCE_DATE_EPOCH", default=None,
    help="The epoch OUTPUT was built with: lets its recorded clamp to it count "
         "[env: SOURCE_DATE_EPOCH].",
)
@click.option(
    "--prev", default=None, metavar="IMAGE",
    help="The previous build OUTPUT was made against: lets the limits and mtimes it carried"
         " count [default for carried mtimes: found in OUTPUT's layout].",
)
@click.option("--ignore-mtime", is_flag=True, help="Do not compare modification times.")
@click.option(
    "--mtime-clamp", type=int, default=None, metavar="EPOCH",
    help="Expect min(mtime of INPUT, EPOCH) in OUTPUT.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@_transport_options
@_output_options
@handle_errors
def verify_cmd(
    a: str, b: str, symmetric: bool, source_date_epoch: int | None, prev: str | None,
    ignore_mtime: bool, mtime_clamp: int | None, as_json: bool,
) -> None:
    """Prove OUTPUT holds exactly INPUT's files; exit 0 when it does, 1 when not.

    OUTPUT's build record (org.pkgchunk.* labels) may excuse only what its policy produces
    from INPUT: mtimes moved back to the values it derives from INPUT (and from --prev,
    --source-date-epoch). A label claiming more is itself a difference. --symmetric
    compares two images and excuses nothing.
    """
    from pkgchunk.render import verify_json, verify_text
    from pkgchunk.verify import verify

    result = verify(
        a, b, ignore_mtime=ignore_mtime, mtime_clamp=mtime_clamp, symmetric=symmetric,
        source_date_epoch=source_date_epoch, prev=prev,
    )
    _warn(result.notes)
    if as_json:
        _print_json(verify_json(a, b, result))
    else:
        _say(verify_text(result))
    if not result.identical:
        sys.exit(1)


@cli.command("gc")
@click.argument("layout", metavar="oci:DIR")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@_output_options
@handle_errors
def gc_cmd(layout: str, dry_run: bool, as_json: bool) -> None:
    """Remove the blobs of layout oci:DIR that none of its tags references any more
    (old layers pile up when a layout is rewritten build after build)."""
    from pkgchunk.gc import gc_layout
    from pkgchunk.render import gc_json, gc_text

    garbage = gc_layout(layout, dry_run=dry_run)
    if as_json:
        _print_json(gc_json(layout, garbage, dry_run))
    else:
        _say(gc_text(layout, garbage, dry_run))


@cli.group("rules")
def rules_group() -> None:
    """Show the shipped rules files and check your own."""


@rules_group.command("show")
@click.argument("name", required=False)
@handle_errors
def rules_show(name: str | None) -> None:
    """Print shipped rules file NAME (a start for your own, or a base for `extends:`);
    without NAME, list the shipped names."""
    from pkgchunk.plan.rules import rules_text, shipped_rules

    if name is None:
        for shipped in shipped_rules():
            click.echo(shipped)
        return
    _, text = rules_text(name)
    click.echo(text, nl=False)


@rules_group.command("check")
@click.argument("file")
@click.argument("src", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (docs/json.md).")
@click.option("--ignore-pkgdb-errors", is_flag=True,
              help="Skip a corrupt package database with a warning.")
@_transport_options
@_output_options
@handle_errors
def rules_check(file: str, src: str | None, as_json: bool, ignore_pkgdb_errors: bool) -> None:
    """Validate rules FILE (path or shipped name), reporting every error; with image SRC,
    list the packages and paths each group and bucket takes there."""
    from pkgchunk.render import rules_check_json, rules_check_text
    from pkgchunk.rulescheck import check_rules

    check = check_rules(file, src, ignore_pkgdb_errors=ignore_pkgdb_errors)
    _warn(check.warnings)
    if as_json:
        _print_json(rules_check_json(check))
    else:
        _say(rules_check_text(check, verbose=_verbose()))


@cli.command("demo")
@click.argument("directory", default="demo-out", required=False)
@handle_errors
def demo_cmd(directory: str) -> None:
    """Build the demo image under DIRECTORY (default ./demo-out), rechunk it and verify."""
    from pkgchunk.demo import run_demo

    if not run_demo(directory, echo=click.echo):
        sys.exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
