"""Every package database reader, in detection order. Adding a format = adding it here
(tests parametrize over this list, so a new format gets its tests too)."""

from __future__ import annotations

from pkgchunk.pkgdb.model import PackageDbReader


def readers() -> list[PackageDbReader]:
    from pkgchunk.pkgdb import dpkg, rpm

    return [*rpm.READERS, *dpkg.READERS]
