"""The host platform in OCI/Go spelling, to pick one image out of a multi-arch index."""

from __future__ import annotations

import platform

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "armv8l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "loongarch64": "loong64",
}


def host_arch() -> str:
    """GOARCH of this machine (e.g. 'amd64'); the raw machine name when unknown."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def host_variant() -> str:
    """GOARM-style variant ('v7' on 32-bit ARM, 'v8' on arm64, else '')."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "v8"
    if machine.startswith("armv") and len(machine) >= 5 and machine[4].isdigit():
        return f"v{machine[4]}"
    return ""
