"""Running an external tool (skopeo, podman) and turning its failure into one line.

Shared by every transport; what the tool prints on stderr is logged, never lost, and a
missing tool says how to install it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

from pkgchunk.errors import PkgchunkError, ToolMissingError

log = logging.getLogger(__name__)


def tool(name: str, why: str) -> str:
    """Path of ``name`` or ToolMissingError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f"{why} needs {name}, which is not installed (apt-get install"
                               f" {name}, dnf install {name})")
    return path


def _shown(cmd: Sequence[str]) -> str:
    """A command line for the debug log, passwords hidden."""
    out = []
    for arg in cmd:
        key, eq, value = arg.partition("=")
        if eq and key.endswith("creds") and ":" in value:
            arg = f"{key}={value.partition(':')[0]}:***"
        out.append(arg)
    return " ".join(out)


def _message(stderr: str) -> str:
    """skopeo's own error text in one line (its logrus ``msg="..."`` when it has one)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        m = re.search(r'msg="((?:[^"\\]|\\.)*)"', line)
        if m:
            text = m.group(1).encode().decode("unicode_escape", "replace")
            return " ".join(text.split())
    return " ".join(lines[-1].split()) if lines else "failed without a message"


#: What Go's HTTP client says when an HTTPS request meets a plain-HTTP registry.
_PLAIN_HTTP = "server gave HTTP response to HTTPS client"


def run(
    cmd: Sequence[str],
    label: str,
    error: type[PkgchunkError],
    *,
    show_output: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a tool; its stdout, or ``error`` naming ``label`` with the tool's own message.

    ``show_output`` sends the tool's progress lines to our stderr (never our stdout,
    which may carry a JSON document).
    """
    log.debug("running %s", _shown(cmd))
    direct = show_output and _has_fd(sys.stderr)
    try:
        proc = subprocess.run(
            list(cmd),
            stdout=sys.stderr if direct else subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            check=False,
        )
    except OSError as err:
        raise error(f"{label}: cannot run {cmd[0]}: {err.strerror or err}") from None
    if show_output and not direct and proc.stdout:
        sys.stderr.write(proc.stdout.decode("utf-8", "replace"))  # a captured stderr (tests)
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        words = [a for a in cmd[1:] if not a.startswith("-")][:2]
        verb = " ".join(words if words[:1] == ["image"] else words[:1])
        message = _message(stderr)
        if _PLAIN_HTTP in message:
            message += (
                " (a plain-HTTP registry: pass --src-tls-verify=false to read from it,"
                " --dest-tls-verify=false to write to it)"
            )
        raise error(f"{label}: {os.path.basename(cmd[0])} {verb} failed: {message}")
    if stderr.strip():
        log.debug("%s: %s", os.path.basename(cmd[0]), stderr.strip())
    return "" if show_output else proc.stdout.decode("utf-8", "replace")


def _has_fd(stream: object) -> bool:
    try:
        return isinstance(stream.fileno(), int)  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
