"""verify INPUT OUTPUT: the output's build record excuses only what its policy produces from
the input; labels claiming more are differences; --symmetric excuses nothing; swapped
arguments are named. Forged outputs are built by hand, real ones by rechunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pkgchunk.cli import cli
from pkgchunk.demo import build_demo_image
from pkgchunk.plan.record import LABEL, MTIME_LABEL
from pkgchunk.rechunk import PlanOptions, rechunk_packages
from pkgchunk.verify import verify
from tests.imagebuild import Member, build_image, directory, file, symlink, write_layout

T = 1_700_000_000


def files(mtime: int | None = None, **kw: object) -> list[Member]:
    """A small tree with real, distinct mtimes (or all ``mtime``)."""
    def t(n: int) -> int:
        return T + n if mtime is None else mtime
    return [
        directory("etc", mtime=t(1)),
        file("etc/conf", b"a=1\n", mtime=t(2), **kw),
        file("etc/other", b"b=2\n", mtime=t(3)),
        symlink("etc/link", "conf", mtime=t(4)),
    ]


def image(tmp: Path, name: str, members: list[Member], labels: dict[str, str] | None = None,
          layers: int = 1) -> str:
    parts = [members] + [[] for _ in range(layers - 1)]
    built = build_image(parts, config={"config": {"Labels": labels or {}}})
    write_layout(tmp / name, {"t": built})
    return f"oci:{tmp / name}:t"


def whats(result: object) -> list[str]:
    return [str(d) for d in result.differences]  # type: ignore[attr-defined]


def test_zero_mtimes_with_a_keep_epoch_0_label_do_not_verify(tmp_path: Path) -> None:
    src = image(tmp_path, "src", files())
    forged = image(tmp_path, "forged", files(mtime=0), {MTIME_LABEL: "keep;epoch=0"})
    result = verify(src, forged)
    assert not result.identical
    lines = whats(result)
    assert any("SOURCE_DATE_EPOCH=0" in w and "--source-date-epoch 0" in w for w in lines)
    assert sum("mtime" in w and w.startswith("/etc") for w in lines) == 4
    # the same claim, when the person verifying says the build was given epoch 0, holds
    assert verify(src, forged, source_date_epoch=0).identical
    # and a CLI run says so in one line per difference, exit 1
    res = CliRunner().invoke(cli, ["verify", src, forged], env={"SOURCE_DATE_EPOCH": ""})
    assert res.exit_code == 1 and "SOURCE_DATE_EPOCH=0" in res.output


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("keep;dirs=5", "says more than its policy"),
        ("keep;epoch=5;junk=1", "says more than its policy"),
        ("clamp;dirs=0", "limits directory mtimes to dirs=0"),
        ("bogus", "not a policy pkgchunk writes"),
    ],
)
def test_a_label_claiming_more_than_its_policy_is_a_difference(
    tmp_path: Path, label: str, fragment: str
) -> None:
    src = image(tmp_path, "src", files())
    out = image(tmp_path, "out", files(), {MTIME_LABEL: label})
    result = verify(src, out)
    assert not result.identical
    assert any(fragment in w for w in whats(result)), whats(result)


def test_unknown_and_plan_labels_are_claims_too(tmp_path: Path) -> None:
    src = image(tmp_path, "src", files())
    extra = image(tmp_path, "extra", files(), {"org.pkgchunk.prune": "sysroot/ostree"})
    assert "<config>: label org.pkgchunk.prune (absent) != 'sysroot/ostree'" in whats(
        verify(src, extra)
    )
    plan = '{"layers":[["a",[]],["b",[]]],"n":1,"v":1}'
    two = image(tmp_path, "two", files(), {LABEL: plan}, layers=2)
    three = image(tmp_path, "three", files(), {LABEL: plan}, layers=3)
    broken = image(tmp_path, "broken", files(), {LABEL: "{"})
    assert verify(src, two).identical
    assert any("describes 2 layers, the image has 3" in w for w in whats(verify(src, three)))
    assert any("not JSON" in w for w in whats(verify(src, broken)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("demo")
    src = build_demo_image(str(tmp / "src"))
    out = f"oci:{tmp}/out:t"
    rechunk_packages(src, out, PlanOptions(max_layers=4))
    return src, out


def test_argument_order_is_named_not_silently_answered(demo: tuple[str, str]) -> None:
    src, out = demo
    assert verify(src, out).identical
    swapped = verify(out, src)
    assert not swapped.identical
    assert len(swapped.notes) == 1 and "swapped" in swapped.notes[0]
    # the note reaches stderr, the differences stdout
    res = CliRunner().invoke(cli, ["verify", out, src])
    assert res.exit_code == 1
    assert "were the arguments swapped?" in res.stderr
    assert "were the arguments swapped?" not in res.stdout


def test_symmetric_excuses_nothing(demo: tuple[str, str]) -> None:
    src, out = demo
    sym = verify(src, out, symmetric=True)
    assert not sym.identical and sym.symmetric and not sym.notes
    lines = whats(sym)
    # the clamped mtimes and pkgchunk's own labels are differences between two images
    assert any("mtime" in w for w in lines)
    assert any(f"label {MTIME_LABEL} (absent)" in w for w in lines)
    # and the same image against itself is identical either way round
    assert verify(out, out, symmetric=True).identical
    res = CliRunner().invoke(cli, ["verify", "--symmetric", src, out])
    assert res.exit_code == 1


def test_sub_second_mtimes_owner_names_and_pax_records_are_compared(tmp_path: Path) -> None:
    acl = "user::rw-,user:1000:r--,group::r--,mask::r--,other::r--"
    def tree(frac: str, uname: str, acl_value: str) -> list[Member]:
        members = files()
        members[1] = file("etc/conf", b"a=1\n", mtime=T + 2,
                          pax={"mtime": f"{T + 2}.{frac}", "SCHILY.acl.access": acl_value},
                          uname=uname)
        return members

    a = image(tmp_path, "a", tree("25", "root", acl))
    cases = {
        "mtime": tree("250000001", "root", acl),
        "owner names": tree("25", "daemon", acl),
        "pax records differ (SCHILY.acl.access)": tree("25", "root", acl.replace("r--", "rw-")),
    }
    assert verify(a, a, symmetric=True).identical
    for fragment, members in cases.items():
        b = image(tmp_path, fragment.split()[0], members)
        got = whats(verify(a, b, symmetric=True))
        assert len(got) == 1 and got[0].startswith("/etc/conf: ") and fragment in got[0], got


def test_root_metadata_is_compared(tmp_path: Path) -> None:
    a = image(tmp_path, "a", [directory("./", mode=0o750, uid=5, gid=6), *files()])
    b = image(tmp_path, "b", [directory("./", mode=0o755, uid=5, gid=6), *files()])
    none = image(tmp_path, "none", files())
    assert verify(a, a, symmetric=True).identical
    assert whats(verify(a, b, symmetric=True)) == ["/: mode 0750 != 0755"]
    assert whats(verify(a, none, symmetric=True)) == [
        "/: root directory's metadata (./) only in A"
    ]
