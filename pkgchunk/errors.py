"""The single error root: the CLI catches PkgchunkError once and prints one line."""

from __future__ import annotations


class PkgchunkError(Exception):
    """A failure the user can act on. `str(err)` is the whole one-line message.

    Messages name the file (or reference) first, then the problem, e.g.
    ``"oci:img: blob sha256:ab.. digest mismatch"``.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(PkgchunkError):
    """The input image, archive or reference is unusable (corrupt, missing, hostile)."""


class PkgdbError(PkgchunkError):
    """A package database inside the image is corrupt, truncated or unreadable."""


class RulesError(PkgchunkError):
    """The rules file is invalid; the message carries file:line:column."""


class OutputError(PkgchunkError):
    """The destination cannot be written; nothing was left behind."""


class ToolMissingError(PkgchunkError):
    """An external tool (skopeo, ...) is needed but not installed."""


class PkgdbWarning(UserWarning):
    """Something odd but survivable in a package database (one bad stanza, an unreadable
    changelog). Readers ``warnings.warn`` it; ``ownership.collect`` gathers the messages."""
