"""member_header packs the common ustar header itself: it must equal tarfile's, byte for byte."""

from __future__ import annotations

import dataclasses
import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from pkgchunk.oci.tarwrite import member_header, tarinfo
from pkgchunk.tree import ENC, ERRORS, DataRef, Entry, encode_path

_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="/\0")
_SEGMENT = st.one_of(
    st.text(alphabet="abcXYZ019._-+@ ", min_size=1, max_size=40),
    st.text(alphabet=_NAME_CHARS, min_size=1, max_size=8),
    st.just("\udcff\udc80"),  # undecodable bytes kept with surrogateescape
)
_PATH = st.lists(_SEGMENT, min_size=1, max_size=6).map("/".join).filter(
    lambda p: all(s not in (".", "..") for s in p.split("/"))
)
# values around every field's limit: 8 octal digits (7 + NUL), 12 (11 + NUL)
_ID = st.sampled_from([0, 1, 1000, 65534, 8**7 - 1, 8**7, 2**31, 2**32 + 5])
_OWNER_NAME = st.sampled_from(["", "root", "a" * 31, "b" * 32, "c" * 33, "usér", "\udcff"])
_BIG = st.sampled_from([0, 1, 511, 512, 1_700_000_000, 8**11 - 1, 8**11, 2**40])


@st.composite
def entries(draw: st.DrawFn) -> tuple[Entry, int | None, str | None]:
    kind = draw(st.sampled_from(["reg", "dir", "sym", "chr", "blk", "fifo"]))
    path = draw(_PATH)
    xattrs = draw(st.sampled_from([(), (("user.a", b"1"),),
                                   (("security.capability", b"\x01\x00\x00\x02"),)]))
    entry = Entry(
        path=path,
        kind=kind,  # type: ignore[arg-type]
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(_ID),
        gid=draw(_ID),
        mtime=draw(st.one_of(_BIG, st.integers(-(2**33), 2**34))),
        size=draw(_BIG) if kind == "reg" else 0,
        target=draw(_PATH) if kind == "sym" else "",
        devmajor=draw(st.integers(0, 8**7 - 1)) if kind in ("chr", "blk") else 0,
        devminor=draw(st.integers(0, 8**7 - 1)) if kind in ("chr", "blk") else 0,
        xattrs=xattrs,
        data=DataRef("/dev/null") if kind == "reg" else None,
        mtime_ns=draw(st.sampled_from([0, 0, 1, 500_000_000, 999_999_999])),
        uname=draw(_OWNER_NAME),
        gname=draw(_OWNER_NAME),
        pax=draw(st.sampled_from([(), (("SCHILY.acl.access", "user::rw-\ngroup::r--\n"),)])),
    )
    if kind == "dir" and draw(st.booleans()):
        entry = dataclasses.replace(entry, path="")  # the root, written as ./
    epoch = draw(st.one_of(st.none(), _BIG))
    link_to = draw(_PATH) if kind == "reg" and draw(st.booleans()) else None
    return entry, epoch, link_to


def _tarfile_header(entry: Entry, epoch: int | None, link_to: str | None) -> bytes:
    ti = tarinfo(entry, source_date_epoch=epoch)
    if link_to is not None:
        ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, link_to, 0
    return ti.tobuf(tarfile.PAX_FORMAT, ENC, ERRORS)


@settings(max_examples=1500, deadline=None)
@given(entries())
def test_member_header_equals_tarfile(case: tuple[Entry, int | None, str | None]) -> None:
    entry, epoch, link_to = case
    try:
        want = _tarfile_header(entry, epoch, link_to)
    except ValueError:
        return  # tarfile refuses it (a device number it cannot store): nothing to compare
    assert member_header(entry, epoch, link_to) == want


def test_common_members_are_read_back_by_tarfile() -> None:
    """The fast path's blocks are valid ustar: tarfile reads every field back."""
    cases = [
        Entry("usr", "dir", 0o755, mtime=1_700_000_000),
        Entry("usr/bin/ls", "reg", 0o4755, uid=0, gid=0, mtime=1_600_000_000, size=0,
              data=DataRef("/dev/null")),
        Entry("usr/bin/sh", "sym", 0o777, mtime=5, target="dash"),
        Entry("dev/null", "chr", 0o666, devmajor=1, devminor=3),
        Entry("dev/sda", "blk", 0o660, gid=6, devmajor=8, devminor=0),
        Entry("run/fifo", "fifo", 0o600, uid=1000, gid=1000, mtime=0),
        Entry("a" * 100, "reg", 0o644, size=0, data=DataRef("/dev/null")),
    ]
    raw = b"".join(member_header(e) for e in cases)
    raw += member_header(cases[1], None, "usr/bin/ls2") + b"\0" * 1024  # a hardlink
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        back = tf.getmembers()
    assert [m.name for m in back] == [e.path for e in cases] + ["usr/bin/ls"]
    for m, e in zip(back, cases, strict=False):
        assert (m.mode, m.uid, m.gid, m.mtime) == (e.mode, e.uid, e.gid, e.mtime)
        assert m.linkname == e.target
        if e.kind in ("chr", "blk"):
            assert (m.devmajor, m.devminor) == (e.devmajor, e.devminor)
    assert back[-1].islnk() and back[-1].linkname == "usr/bin/ls2" and back[-1].size == 0
    assert encode_path(cases[-1].path) == raw[6 * 512 : 6 * 512 + 100]
