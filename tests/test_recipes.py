"""docs/usage.md's recipes, run as written: podman and skopeo against a throw-away vfs store
(CONTAINERS_STORAGE_CONF), `registry.example.com` replaced by a docker-registry on loopback
speaking HTTPS with a throw-away certificate that the tools trust through SSL_CERT_FILE.

What cannot run here is replaced, and each replacement is spelled out where it happens: the
Containerfiles are FROM local images (no public registry), the Debian root is made with dpkg
(not mmdebstrap), and the workflow's `uses:`, `sudo apt-get` and `podman login` steps are
skipped. Also: the top-level Containerfile's COPY set builds the package, and shell
completion scripts come out of the real entry point.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import yaml

from pkgchunk.cli import cli
from pkgchunk.plan.record import LABEL
from tests.bootcbuild import ostree_farm
from tests.debbuild import build_deb, install, new_root
from tests.helpers import REPO, require_tool
from tests.registry import Registry, running_registry
from tests.versions import demo_versions, fedora_root

USAGE = REPO / "docs" / "usage.md"
PLACEHOLDER = "registry.example.com"


def recipe(name: str) -> str:
    m = re.search(rf"<!-- recipe: {re.escape(name)} -->\n```\w+\n(.*?)```", USAGE.read_text(),
                  re.S)
    assert m, f"docs/usage.md has no recipe {name!r}"
    return m.group(1)


@dataclass
class Site:
    """Where a recipe runs: its directory, environment and registry."""

    cwd: Path
    env: dict[str, str]
    registry: Registry

    def sh(self, script: str) -> str:
        """Run a recipe's shell text (registry name replaced), stopping at the first error."""
        text = script.replace(PLACEHOLDER, self.registry.host)
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", text], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, check=False,
        )
        assert proc.returncode == 0, f"{text}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        return proc.stdout

    def tool(self, *args: str) -> str:
        proc = subprocess.run(list(args), cwd=self.cwd, env=self.env, capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        return proc.stdout

    def pkgchunk(self, *args: str) -> str:
        return self.tool(str(self.cwd.parent / "bin" / "pkgchunk"), *args)

    def labels(self, ref: str) -> dict[str, str]:
        doc = json.loads(self.tool("skopeo", "inspect", ref.replace(PLACEHOLDER,
                                                                      self.registry.host)))
        return dict(doc["Labels"] or {})

    def digest(self, ref: str) -> str:
        return self.tool("skopeo", "inspect", "--format", "{{.Digest}}", ref).strip()


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[Site]:
    require_tool("podman")
    require_tool("skopeo")
    runroot = tempfile.mkdtemp(prefix="pkgchunk-run-")  # podman: at most 50 characters
    with running_registry(tmp_path, tls=True) as registry:
        (tmp_path / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path / "storage"}"\n'
            f'runroot = "{runroot}"\n'
        )
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "pkgchunk"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pkgchunk.cli "$@"\n')
        shim.chmod(0o755)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(REPO),
            "CONTAINERS_STORAGE_CONF": str(tmp_path / "storage.conf"),
            "SSL_CERT_FILE": str(registry.ca),
        }
        cwd = tmp_path / "work"
        cwd.mkdir()
        try:
            yield Site(cwd, env, registry)
        finally:
            shutil.rmtree(runroot, ignore_errors=True)


def _containerfile(site: Site, base: str, app: str) -> None:
    """An application Containerfile FROM a local image (instead of a registry's)."""
    (site.cwd / "app.py").write_text(app)
    (site.cwd / "Containerfile").write_text(
        f"FROM {base}\nCOPY app.py /opt/app/app.py\nLABEL org.example.app=demo\n"
    )


# --------------------------------------------------------------------------- podman recipes


@pytest.mark.slow
def test_containerfile_post_step(site: Site, tmp_path: Path) -> None:
    v1, v2 = demo_versions(tmp_path)
    _containerfile(site, v1, "print('one')\n")
    out = site.sh(recipe("containerfile"))
    assert "previous build" not in out
    pushed = f"docker://{site.registry.host}/app:latest"
    labels = site.labels(pushed)
    assert LABEL in labels and labels["org.example.app"] == "demo"
    first = site.digest(pushed)
    res = site.pkgchunk("verify", "containers-storage:localhost/app:build", pushed)
    assert res.startswith("identical: ")

    # The next build: the store's rechunked image is the previous build, and a client
    # holding the first push downloads only some layers.
    _containerfile(site, v2, "print('two')\n")
    out = site.sh(recipe("containerfile"))
    assert "previous build: containers-storage:localhost/app:latest" in out
    d = json.loads(site.pkgchunk("diff", f"docker://{site.registry.host}/app@{first}", pushed,
                                 "--json"))
    assert any(la["pulled"] for la in d["layers"]) and not all(la["pulled"] for la in d["layers"])


@pytest.mark.slow
def test_containerfile_straight_to_the_registry(site: Site, tmp_path: Path) -> None:
    v1, v2 = demo_versions(tmp_path)
    _containerfile(site, v1, "print('one')\n")
    assert "previous build" not in site.sh(recipe("containerfile-registry"))
    _containerfile(site, v2, "print('two')\n")
    out = site.sh(recipe("containerfile-registry"))
    assert f"previous build: docker://{site.registry.host}/app:latest" in out


@pytest.mark.slow
def test_github_actions_workflow_steps(site: Site, tmp_path: Path) -> None:
    workflow = yaml.safe_load(recipe("github-actions"))
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout", "actions/upload-artifact"]
    skipped = {"Install pkgchunk", "Log in"}  # sudo apt-get, a GitHub token
    runnable = [s for s in steps if "run" in s and s["name"] not in skipped]
    assert [s["name"] for s in runnable] == [
        "Build", "Remember the previous build", "Rechunk and push", "Update cost"
    ]
    image = f"{site.registry.host}/gha"
    site.env.update(IMAGE=image, GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"))
    site.tool("git", "init", "-q")
    site.tool("git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q",
              "--allow-empty", "-m", "build")
    v1, v2 = demo_versions(tmp_path)
    for base, app in ((v1, "one"), (v2, "two")):
        _containerfile(site, base, f"print('{app}')\n")
        for step in runnable:
            site.sh(step["run"])
    report = json.loads((site.cwd / "rechunk.json").read_text())
    assert report["previous"] == f"docker://{image}:latest"
    commit_time = int(site.tool("git", "log", "-1", "--format=%ct"))
    assert LABEL in site.labels(f"docker://{image}:latest")
    created = json.loads(site.tool("skopeo", "inspect", f"docker://{image}:latest"))["Created"]
    # --source-date-epoch from the commit dates the image.
    assert created.startswith(
        datetime.datetime.fromtimestamp(commit_time, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    )
    sbom = json.loads((site.cwd / "app.spdx.json").read_text())
    assert len(sbom["packages"]) > 5
    summary = (tmp_path / "summary.md").read_text()
    assert re.search(r"^pull .* of .* layers;", summary, re.M), summary
    assert re.search(r"^have ", summary, re.M) and re.search(r"^pull ", summary, re.M)


def _dpkg_root(root: Path, work: Path, tz_version: str) -> None:
    """A small Debian root made by dpkg from built packages (stands in for mmdebstrap)."""
    if root.exists():
        shutil.rmtree(root)
    new_root(root)
    debs = [
        build_deb(work, "base-files", "12.4", files={"/etc/debian_version": b"12.4\n"}),
        build_deb(work, "tzdata", tz_version,
                  files={"/usr/share/zoneinfo/UTC": tz_version.encode() * 500}),
        build_deb(work, "libc6", "2.36-9", files={"/usr/lib/libc.so.6": b"libc" * 20_000}),
    ]
    install(root, *debs)


def test_debian_image_pipeline(site: Site, tmp_path: Path) -> None:
    script = recipe("debian")
    first, rest = script.split("\n", 1)
    assert first.startswith("mmdebstrap ") and first.endswith(" rootfs")
    for n, tz in enumerate(("2024a-0+deb12u1", "2024b-0+deb12u1")):
        work = tmp_path / f"debs{n}"
        work.mkdir()
        _dpkg_root(site.cwd / "rootfs", work, tz)
        out = site.sh(rest)  # everything after the mmdebstrap line, as written
        assert "identical: " in out  # the verify line
    assert "previous build: oci:debian-image:bookworm" in out
    pushed = f"docker://{site.registry.host}/debian:bookworm"
    assert LABEL in site.labels(pushed)
    sbom = json.loads((site.cwd / "debian.spdx.json").read_text())
    names = {p["name"]: p["versionInfo"] for p in sbom["packages"]}
    assert names == {"base-files": "12.4", "tzdata": "2024b-0+deb12u1", "libc6": "2.36-9"}


def test_bootc_image_pipeline(site: Site, tmp_path: Path) -> None:
    root = fedora_root(tmp_path)
    (root / "sysroot").mkdir()
    commit = ostree_farm(root)  # /usr hardlinked into /sysroot/ostree/repo, as fedora-bootc
    with tarfile.open(tmp_path / "root.tar", "w") as tar:
        tar.add(root, arcname=".")
    # The base: a Fedora-like ostree-encapsulated root imported into the store (stands in
    # for fedora-bootc, with its labels).
    site.tool("podman", "import", "--change", "LABEL containers.bootc=1", "--change",
              "LABEL ostree.bootable=1", "--change", f"LABEL ostree.commit={commit}",
              "--change", "LABEL ostree.final-diffid=sha256:00",
              str(tmp_path / "root.tar"), "localhost/fedora-bootc:base")
    (site.cwd / "motd").write_text("welcome\n")
    (site.cwd / "Containerfile").write_text(
        "FROM localhost/fedora-bootc:base\nCOPY motd /etc/motd\n"
    )
    out = site.sh(recipe("bootc"))
    assert "rules fedora-bootc" in out
    pushed = f"docker://{site.registry.host}/os:latest"
    labels = site.labels(pushed)
    assert labels.get("containers.bootc") == "1" and LABEL in labels
    assert labels.get("ostree.bootable") == "1"
    assert "ostree.commit" not in labels and "ostree.final-diffid" not in labels
    checked = site.pkgchunk("verify", "containers-storage:localhost/os:build", pushed)
    assert checked.startswith("identical: ")
    farm = re.search(r"pruned: (\d+) paths under /sysroot/ostree", checked)
    assert farm and int(farm.group(1)) > 20  # the object store was there, and is not now
    sbom = json.loads((site.cwd / "os.spdx.json").read_text())
    purls = {ref["referenceLocator"] for p in sbom["packages"] for ref in p["externalRefs"]}
    assert "pkg:rpm/fedora/pkgchunk-demo@1.2-3?arch=noarch&distro=fedora-40&epoch=2" in purls


# --------------------------------------------------------------------------- no tools needed


def _pkgchunk_commands(text: str) -> list[list[str]]:
    """Every `pkgchunk ...` command line in a shell or YAML text (continuations joined,
    workflow expressions and shell expansions made into plain words)."""
    text = re.sub(r"\$\{\{[^}]*\}\}", "X", text.replace("\\\n", " "))
    text = re.sub(r'"\$\([^)]*\)"', "1", text)
    commands = []
    for line in text.splitlines():
        m = re.search(r"(?:^|\s)pkgchunk (.*)", line)
        if m:
            words = shlex.split(m.group(1).split(">")[0])
            commands.append(words)
    return commands


def test_every_documented_command_parses() -> None:
    blocks = re.findall(r"```(?:sh|yaml)\n(.*?)```", USAGE.read_text(), re.S)
    commands = [c for block in blocks for c in _pkgchunk_commands(block)]
    assert len(commands) >= 8 and {c[0] for c in commands} == {"rechunk", "verify", "diff"}
    for words in commands:
        name, args = words[0], words[1:]
        command = cli.commands.get(name)
        assert command is not None, f"docs/usage.md: no command {name!r}"
        try:
            command.make_context(name, list(args))
        except click.ClickException as err:
            pytest.fail(f"docs/usage.md: pkgchunk {' '.join(words)}: {err.format_message()}")


@pytest.mark.slow
def test_pkgchunk_containerfile_copies_what_the_package_needs(tmp_path: Path) -> None:
    lines = (REPO / "Containerfile").read_text().splitlines()
    copies = [line.split()[1:] for line in lines if line.startswith("COPY ")]
    src = tmp_path / "src"
    src.mkdir()
    for *sources, dest in copies:
        assert dest.startswith("/src/"), dest
        for s in sources:
            path = REPO / s
            assert path.exists(), f"Containerfile copies {s}, which does not exist"
            target = src / dest.removeprefix("/src/") if not dest.endswith("/") else src / s
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(path, target)
    entry = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert entry == ['ENTRYPOINT ["pkgchunk"]']
    assert 'pkgchunk = "pkgchunk.cli:main"' in (src / "pyproject.toml").read_text()
    # What `pip install /src` in the image builds, from exactly those files (with build
    # isolation, as there: pip fetches the build backend pyproject.toml names).
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "wheel"), str(src)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "wheel").glob("pkgchunk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pkgchunk/cli.py" in names and "pkgchunk/rules_data/fedora-bootc.yaml" in names


def _entry_point(env: dict[str, str]) -> str:
    """Run pkgchunk's console entry point as the program 'pkgchunk' (its installed name)."""
    code = "import sys; sys.argv[0] = 'pkgchunk'; from pkgchunk.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_shell_completion_script_comes_from_the_entry_point() -> None:
    script = _entry_point({"_PKGCHUNK_COMPLETE": "bash_source"})
    assert "_pkgchunk_completion()" in script
    assert "complete -o nosort -F _pkgchunk_completion pkgchunk" in script
    # bash runs the script's function, which asks the program with the words typed so far.
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    answer = _entry_point({"_PKGCHUNK_COMPLETE": "bash_complete",
                           "COMP_WORDS": "pkgchunk re", "COMP_CWORD": "1"})
    assert "plain,rechunk" in answer.splitlines()
    answer = _entry_point({"_PKGCHUNK_COMPLETE": "bash_complete",
                           "COMP_WORDS": "pkgchunk rechunk --compre", "COMP_CWORD": "2"})
    assert answer.splitlines() == ["plain,--compression"]
    assert "compdef" in _entry_point({"_PKGCHUNK_COMPLETE": "zsh_source"})
