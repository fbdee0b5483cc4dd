"""`rechunk --sbom spdx-json FILE`: an SPDX 2.3 document that the SPDX project's own
validator accepts, listing every package the `packages` command reports, with purls."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.pkgdb.model import Package
from pkgchunk.sbom import purl
from tests.helpers import REQUIRE_TOOLS
from tests.versions import demo_versions, fedora_root

EPOCH = "1720000000"
_PURL = re.compile(r"pkg:(deb|rpm)/(?:([^/]+)/)?([^@/]+)@([^?]+)(?:\?(.*))?")


def _validate(path: Path) -> None:
    """The reference implementation's parser and validator: no message at all."""
    try:
        from spdx_tools.spdx.parser import parse_anything
        from spdx_tools.spdx.validation import document_validator as validator
    except ImportError:
        msg = "spdx-tools is not installed (pip install -e '.[test]')"
        if REQUIRE_TOOLS:
            pytest.fail(msg)
        pytest.skip(msg)
    document = parse_anything.parse_file(str(path))
    messages = validator.validate_full_spdx_document(document)
    assert messages == [], [m.validation_message for m in messages]


def _rechunk_with_sbom(src: str, dest: str, sbom: Path, *extra: str) -> dict[str, Any]:
    res = CliRunner().invoke(
        cli,
        ["rechunk", src, dest, "--sbom", "spdx-json", str(sbom), "--source-date-epoch", EPOCH,
         *extra],
    )
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(sbom.read_text())
    return doc


def _packages_json(src: str) -> list[dict[str, Any]]:
    res = CliRunner().invoke(cli, ["packages", src, "--json"])
    assert res.exit_code == 0, res.output
    packages: list[dict[str, Any]] = json.loads(res.output)["packages"]
    return packages


def _check_structure(doc: dict[str, Any], name: str) -> None:
    """SPDX 2.3's required document and package fields, by hand (besides the validator)."""
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["SPDXID"] == "SPDXRef-DOCUMENT" and doc["name"] == name
    assert re.fullmatch(r"https://\S+", doc["documentNamespace"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["creationInfo"]["created"])
    assert doc["creationInfo"]["creators"] and all(
        c.startswith(("Tool: ", "Organization: ", "Person: "))
        for c in doc["creationInfo"]["creators"]
    )
    ids = [p["SPDXID"] for p in doc["packages"]]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"SPDXRef-[A-Za-z0-9.-]+", i) for i in ids)
    for p in doc["packages"]:
        assert {"name", "downloadLocation", "filesAnalyzed"} <= set(p)
    described = {
        r["relatedSpdxElement"] for r in doc["relationships"]
        if (r["spdxElementId"], r["relationshipType"]) == ("SPDXRef-DOCUMENT", "DESCRIBES")
    }
    assert described == set(ids)


def _purl_of(p: dict[str, Any]) -> tuple[str, str | None, str, str, dict[str, str]]:
    (ref,) = [r for r in p["externalRefs"] if r["referenceType"] == "purl"]
    assert ref["referenceCategory"] == "PACKAGE-MANAGER"
    m = _PURL.fullmatch(ref["referenceLocator"])
    assert m, ref["referenceLocator"]
    quals = dict(q.split("=", 1) for q in (m.group(5) or "").split("&") if q)
    return m.group(1), m.group(2), unquote(m.group(3)), unquote(m.group(4)), quals


def test_debian_image_sbom_lists_every_package(tmp_path: Path) -> None:
    _, v2 = demo_versions(tmp_path)
    dest = f"oci:{tmp_path}/out:v2"
    doc = _rechunk_with_sbom(v2, dest, tmp_path / "sbom.json")
    _validate(tmp_path / "sbom.json")
    _check_structure(doc, dest)
    listed = _packages_json(v2)
    assert len(doc["packages"]) == len(listed)
    want = {
        (p["name"], (f"{p['epoch']}:" if p["epoch"] is not None else "") + p["version"], p["arch"])
        for p in listed
    }
    got = set()
    for p in doc["packages"]:
        kind, namespace, name, version, quals = _purl_of(p)
        assert (kind, namespace) == ("deb", "debian")  # the demo has no real os-release
        assert (name, version) == (p["name"], p["versionInfo"])
        got.add((name, version, quals["arch"]))
    assert got == want
    # Reproducible: the same build writes the same bytes.
    first = (tmp_path / "sbom.json").read_bytes()
    _rechunk_with_sbom(v2, f"oci:{tmp_path}/out2:v2", tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["packages"] == doc["packages"]
    assert again["creationInfo"]["created"] == doc["creationInfo"]["created"]
    assert first.endswith(b"\n")


def test_rpm_image_sbom_has_rpm_purls_with_epoch_and_distro(tmp_path: Path) -> None:
    root = fedora_root(tmp_path)
    doc = _rechunk_with_sbom(
        f"rootfs:{root}", f"oci:{tmp_path}/out:f", tmp_path / "f.json", "--rules", "fedora-bootc"
    )
    _validate(tmp_path / "f.json")
    by_name = {p["name"]: p for p in doc["packages"]}
    assert set(by_name) == {p["name"] for p in _packages_json(f"rootfs:{root}")}
    # Written out by hand from the purl spec (type rpm: namespace = vendor, epoch qualifier).
    demo = by_name["pkgchunk-demo"]["externalRefs"][0]["referenceLocator"]
    assert demo == "pkg:rpm/fedora/pkgchunk-demo@1.2-3?arch=noarch&distro=fedora-40&epoch=2"
    tiny = _purl_of(by_name["tiny"])
    assert tiny[:4] == ("rpm", "fedora", "tiny", "0.1-1") and "epoch" not in tiny[4]
    assert by_name["demo-tools"]["sourceInfo"].endswith("pkgchunk-demo")
    assert by_name["pkgchunk-demo"]["versionInfo"] == "2:1.2-3"


def test_purl_encodes_what_the_spec_says() -> None:
    deb = Package("libstdc++6", "12.2.0-14", "amd64", "gcc-12", epoch=1, db="dpkg")
    assert purl(deb, {}) == "pkg:deb/debian/libstdc%2B%2B6@1:12.2.0-14?arch=amd64"
    ubuntu = {"ID": "ubuntu", "VERSION_ID": "24.04"}
    plain = Package("zlib1g", "1.3~dfsg-3", "amd64", "zlib", db="dpkg")
    assert purl(plain, ubuntu) == "pkg:deb/ubuntu/zlib1g@1.3~dfsg-3?arch=amd64&distro=ubuntu-24.04"


def test_unwritable_sbom_fails_before_writing_the_image(tmp_path: Path) -> None:
    v1, _ = demo_versions(tmp_path)
    res = CliRunner().invoke(
        cli, ["rechunk", v1, f"oci:{tmp_path}/out:x", "--sbom", "spdx-json",
              str(tmp_path / "missing" / "s.json")],
    )
    assert res.exit_code == 2
    assert res.output.startswith(f"pkgchunk: error: {tmp_path}/missing/s.json: cannot write")
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(cli, ["rechunk", v1, f"oci:{tmp_path}/o:x", "--sbom", "cyclonedx",
                                   "x.json"])
    assert res.exit_code == 2 and "cyclonedx" in res.output
