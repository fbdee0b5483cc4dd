"""Opening a file named by input (a blob, a rules file) without hanging or reading forever.

A FIFO would block the open and a device (a symlink to /dev/zero) would never end, so only
regular files are accepted. Shared by the image readers and the rules loader, which is why
it sits at the bottom of the import graph and not in ``oci/``.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


def open_regular(path: str) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")
