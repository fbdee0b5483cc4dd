"""An SPDX 2.3 JSON document of the image's packages, from the databases already read.

It lists what the package managers recorded (name, version, architecture, source
package, a package URL), nothing more: pkgchunk does not scan files or guess
licenses, so ``filesAnalyzed`` is false and the license fields say NOASSERTION (the
package's own license text is kept as a comment, since RPM and Debian spellings are
not always SPDX expressions). The document is reproducible: its time is
SOURCE_DATE_EPOCH when given and its namespace is derived from the manifest digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pkgchunk import __version__
from pkgchunk.errors import OutputError
from pkgchunk.pkgdb.model import Ownership, Package
from pkgchunk.tree import FileTree

SPDX_VERSION = "SPDX-2.3"
#: os-release files larger than this are not os-release files.
_MAX_OS_RELEASE = 64 << 10
_KEY = re.compile(r"[A-Z][A-Z0-9_]*")


def read_os_release(tree: FileTree) -> dict[str, str]:
    """KEY -> value of the image's os-release ({} when absent or unreadable)."""
    for candidate in ("etc/os-release", "usr/lib/os-release"):
        path = tree.resolve(candidate)
        entry = tree.get(path) if path is not None else None
        if entry is None or entry.kind != "reg" or entry.size > _MAX_OS_RELEASE:
            continue
        try:
            with tree.open(path or "") as f:
                text = f.read(_MAX_OS_RELEASE).decode("utf-8", "replace")
        except (OSError, ValueError):
            continue
        return _parse_os_release(text)
    return {}


def _parse_os_release(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        if not eq or not _KEY.fullmatch(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key] = value
    return out


def _is_rpm(pkg: Package) -> bool:
    return pkg.db.startswith("rpm")


def deb_version(pkg: Package) -> str:
    return f"{pkg.epoch}:{pkg.version}" if pkg.epoch is not None else pkg.version


def purl(pkg: Package, os_release: Mapping[str, str]) -> str:
    """The package URL (purl-spec ``deb``/``rpm`` types) of an installed package."""
    distro_id = os_release.get("ID", "").lower()
    qualifiers: dict[str, str] = {}
    if pkg.arch:
        qualifiers["arch"] = pkg.arch
    version_id = os_release.get("VERSION_ID", "")
    if distro_id and version_id:
        qualifiers["distro"] = f"{distro_id}-{version_id}"
    if _is_rpm(pkg):
        kind, namespace = "rpm", distro_id
        version = f"{pkg.version}-{pkg.release}" if pkg.release else pkg.version
        if pkg.epoch:
            qualifiers["epoch"] = str(pkg.epoch)
    else:
        kind, namespace = "deb", distro_id or "debian"
        version = deb_version(pkg)
    head = f"pkg:{kind}/" + (f"{quote(namespace, safe='')}/" if namespace else "")
    text = f"{head}{quote(pkg.name, safe='')}@{quote(version, safe=':')}"
    if qualifiers:
        text += "?" + "&".join(
            f"{k}={quote(v, safe='')}" for k, v in sorted(qualifiers.items())
        )
    return text


def _spdx_id(key: str, used: set[str]) -> str:
    base = "SPDXRef-Package-" + re.sub(r"[^A-Za-z0-9.-]+", "-", key).strip("-")
    spdx_id, n = base, 1
    while spdx_id in used:
        n += 1
        spdx_id = f"{base}-{n}"
    used.add(spdx_id)
    return spdx_id


def spdx_document(
    ownership: Ownership,
    *,
    name: str,
    manifest_digest: str,
    os_release: Mapping[str, str],
    created: int | None = None,
) -> dict[str, Any]:
    """The SPDX 2.3 document (a JSON object) describing every installed package."""
    when = datetime.fromtimestamp(
        created if created is not None else datetime.now(UTC).timestamp(), tz=UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace_id = uuid.uuid5(uuid.NAMESPACE_URL, f"pkgchunk:{name}@{manifest_digest}")
    used: set[str] = set()
    packages: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = []
    for key in sorted(ownership.packages):
        pkg = ownership.packages[key]
        spdx_id = _spdx_id(key, used)
        version = pkg.evr if _is_rpm(pkg) else deb_version(pkg)
        entry: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": pkg.name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": f"built from source package {pkg.source or pkg.name}",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": purl(pkg, os_release),
                }
            ],
        }
        if pkg.license:
            entry["licenseComments"] = f"license as the package states it: {pkg.license}"
        packages.append(entry)
        relationships.append(
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": spdx_id,
            }
        )
    return {
        "spdxVersion": SPDX_VERSION,
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://spdx.org/spdxdocs/pkgchunk-{namespace_id}",
        "creationInfo": {
            "created": when,
            "creators": [f"Tool: pkgchunk-{__version__}"],
            "comment": f"packages of image manifest {manifest_digest}",
        },
        "packages": packages,
        "relationships": relationships,
    }


def check_target(path: str) -> None:
    """OutputError now if ``path`` cannot be written later (its directory is missing)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory")
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise OutputError(f"{path}: cannot write: directory {directory} is missing or read-only")


def write_json(path: str, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` under a temporary name, then rename (all or nothing)."""
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.tmp-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
    except OSError as err:
        raise OutputError(f"{path}: cannot write: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
