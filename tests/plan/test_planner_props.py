"""Property tests of the planner: placement, bound, determinism and stability."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pkgchunk.errors import RulesError
from pkgchunk.plan.groups import Group
from pkgchunk.plan.planner import Plan, plan
from pkgchunk.plan.record import decode, encode
from tests.plan.test_planner import assert_docker_order

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.one_of(
    st.just(0),
    st.integers(1, 4096),
    st.integers(4096, 1 << 30),
)
probs = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0))


@st.composite
def group_sets(draw: st.DrawFn, min_size: int = 0) -> tuple[list[Group], dict[str, float]]:
    keys = draw(
        st.lists(
            st.text("abcdefghij/-", min_size=1, max_size=6), min_size=min_size, max_size=40,
            unique=True,
        )
    )  # fmt: skip
    groups = []
    p: dict[str, float] = {}
    for i, key in enumerate(keys):
        npaths = draw(st.integers(0, 3)) if i % 5 == 4 else 1
        groups.append(
            Group(
                key=key,
                kind="package",
                packages=(f"{key}:all",),
                versions=(f"{key}={draw(st.integers(0, 3))}",),
                paths=tuple(f"{key}/p{j}" for j in range(npaths)),
                bytes=draw(sizes),
                dedicated=draw(st.booleans()) if i % 7 == 6 else False,
            )
        )
        p[key] = draw(probs)
    return groups, p


def layout(result: Plan) -> dict[str, frozenset[str]]:
    return {layer.name: frozenset(layer.groups) for layer in result.layers}


@SETTINGS
@given(group_sets(), st.integers(1, 12))
def test_every_group_exactly_once_within_the_bound(
    gp: tuple[list[Group], dict[str, float]], n: int
) -> None:
    groups, p = gp
    dedicated = sum(g.dedicated for g in groups)
    if dedicated > n or (dedicated == n and len(groups) > dedicated):
        with pytest.raises(RulesError):
            plan(groups, p, n)
        return
    result = plan(groups, p, n)
    placed = [k for layer in result.layers for k in layer.groups]
    assert sorted(placed) == sorted(g.key for g in groups)
    assert len(result.layers) <= n
    for layer in result.layers:
        members = [g for g in groups if g.key in layer.groups]
        if any(g.dedicated for g in members):
            assert len(members) == 1
        assert 0.0 <= layer.change_probability <= 1.0
    assert len({layer.name for layer in result.layers}) == len(result.layers)
    if any(g.paths for g in groups):
        assert all(layer.paths for layer in result.layers)
    assert_docker_order(result)


@SETTINGS
@given(group_sets(), st.integers(1, 12), st.randoms(use_true_random=False))
def test_same_input_in_any_order_gives_the_same_plan(
    gp: tuple[list[Group], dict[str, float]], n: int, rnd: random.Random
) -> None:
    groups, p = gp
    assume(sum(g.dedicated for g in groups) < n)
    shuffled = groups[:]
    rnd.shuffle(shuffled)
    items = list(p.items())
    rnd.shuffle(items)
    assert plan(groups, p, n) == plan(shuffled, dict(items), n)


def _stable_except(
    before: dict[str, frozenset[str]],
    after: dict[str, frozenset[str]],
    key: str,
    groups: list[Group],
) -> None:
    """Only the layer that held ``key`` or the one that received it may differ.

    Groups without paths put nothing in a layer; they may move (a layer left with
    nothing else to hold is dissolved), so they are not compared."""
    ignore = {key} | {g.key for g in groups if not g.paths}
    for name in before.keys() | after.keys():
        old = before.get(name, frozenset()) - ignore
        new = after.get(name, frozenset()) - ignore
        assert old == new, (name, sorted(old), sorted(new))


@SETTINGS
@given(group_sets(min_size=1), st.integers(2, 12), st.data())
def test_adding_or_removing_one_group_moves_nothing_else(
    gp: tuple[list[Group], dict[str, float]], n: int, data: st.DataObject
) -> None:
    groups, p = gp
    assume(sum(g.dedicated for g in groups) + 1 < n)
    first = plan(groups, p, n)
    previous = decode(encode(first, groups, None))
    # the label round trip keeps the layout
    assert [(la.name, la.groups) for la in previous.layers] == [
        (la.name, la.groups) for la in first.layers
    ]

    # remove one group
    gone = data.draw(st.sampled_from(groups))
    rest = [g for g in groups if g is not gone]
    second = plan(rest, p, n, previous)
    _stable_except(layout(first), layout(second), gone.key, groups)
    kept = [la.name for la in second.layers]
    assert kept == [la.name for la in first.layers if la.name in kept]
    emptied = {la.name for la in first.layers if not (set(la.groups) - {gone.key})}
    assert not emptied & set(kept)

    # add one group (dedicated only when there is room for its own layer)
    new_key = "new-" + data.draw(st.text("xyz", min_size=1, max_size=4))
    dedicated = data.draw(st.booleans()) and len(first.layers) < n
    extra = Group(
        new_key, "package", (), ("v",), (f"{new_key}/f",), data.draw(sizes), dedicated=dedicated
    )
    third = plan([*groups, extra], p | {new_key: data.draw(probs)}, n, previous)
    _stable_except(layout(first), layout(third), new_key, groups)
    assert len(third.layers) <= n
    old_names = [la.name for la in first.layers]
    assert [la.name for la in third.layers if la.name in old_names] == old_names
