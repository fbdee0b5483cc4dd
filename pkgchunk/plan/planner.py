"""Groups -> at most N layers, minimising the bytes a client pulls per update.

Pure and deterministic: no I/O, no clocks, no hashing of Python objects; the
input order does not matter (groups are sorted by key first).

Cost model: a layer is pulled again when any of its groups changes, so its
expected cost per update is ``bytes * (1 - prod(1 - p_i))``. Merging clusters A
and B raises the total by ``bA*qA*(1-qB) + bB*qB*(1-qA)`` (q = 1 - p), never by
a negative amount; more layers never cost more bytes, so the budget is spent
unless a split would save less than ``min_gain`` expected bytes per update.

Algorithm (docs/planner.md): dedicated groups take their own layers; the rest
start as singletons and the pair whose merge costs least is merged until the
budget holds (best-partner heap, O(n^2) worst case), then while merges are
nearly free; a relocation pass moves single groups to the layer where they cost
least. With a previous plan, its layers are frozen: existing groups stay, new
groups merge among themselves or into existing layers, whichever costs least,
and two existing layers merge only when the budget leaves no other way.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pkgchunk.errors import RulesError
from pkgchunk.image import LayerSpec
from pkgchunk.plan import stable
from pkgchunk.plan.groups import Group
from pkgchunk.tree import encode_path

#: Splits that save less than this many expected bytes per update are not worth a layer.
DEFAULT_MIN_GAIN = 64 << 10
#: Probability used for a group the caller gave none for.
DEFAULT_PROBABILITY = 0.5
MAX_NAME_CHARS = 64
ANNOTATION_CHARS = 2048
COMMENT_CHARS = 400
#: How a build without a previous plan is laid out: ``stable`` (plan/stable.py) lands the
#: next image's groups the same way; ``cost`` is the greedy merge alone.
FirstLayout = Literal["stable", "cost"]


@dataclass(frozen=True, slots=True)
class GroupHistory:
    """What earlier builds saw of one group: ``seen`` builds held it, in ``changed`` of
    them its version differed from the build before; ``version`` is the latest."""

    seen: int
    changed: int
    version: str


@dataclass(frozen=True, slots=True)
class PreviousLayer:
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PreviousPlan:
    """The plan of the previous build (decoded from its ``org.pkgchunk.plan`` label)."""

    layers: tuple[PreviousLayer, ...]
    history: Mapping[str, GroupHistory] = field(default_factory=dict)
    builds: int = 1


@dataclass(frozen=True, slots=True)
class PlannedLayer:
    """One output layer. ``packages`` are package names (for annotations)."""

    name: str
    groups: tuple[str, ...]
    packages: tuple[str, ...]
    paths: tuple[str, ...]
    bytes: int
    change_probability: float


@dataclass(frozen=True, slots=True)
class Plan:
    layers: tuple[PlannedLayer, ...]

    def expected_bytes(self) -> float:
        """Expected bytes pulled per update under the plan's own probabilities."""
        return sum(layer.bytes * layer.change_probability for layer in self.layers)

    def layer_of(self) -> dict[str, str]:
        """Group key -> layer name."""
        return {g: layer.name for layer in self.layers for g in layer.groups}


# --------------------------------------------------------------------------- clusters


@dataclass(eq=False, slots=True)
class _Cluster:
    id: int
    members: list[str]
    bytes: int
    q: float
    frozen: bool = False
    name: str = ""
    order: int = -1
    alive: bool = True

    def cost(self) -> float:
        return self.bytes * (1.0 - self.q)


#: Cheapest partners remembered per cluster (see _Merger.run).
_SHORTLIST = 16


class _Merger:
    """Greedy agglomeration: repeatedly merge the allowed pair of least cost increase."""

    def __init__(self, clusters: list[_Cluster], next_id: int) -> None:
        self.clusters = clusters
        self.next_id = next_id

    def alive(self) -> list[_Cluster]:
        return [c for c in self.clusters if c.alive]

    def run(self, target: int, min_gain: float, frozen_pairs: bool) -> None:
        """Merge while more than ``target`` clusters are alive or a merge costs less
        than ``min_gain``. Two frozen clusters merge only with ``frozen_pairs``.

        Each cluster keeps its ``_SHORTLIST`` cheapest partners, with the invariant
        that every live partner cheaper than ``limit`` is on the list; a pair's cost
        never changes while both live, so a list only needs a full rescan when all
        its entries have been merged away."""
        live = {c.id: c for c in self.clusters if c.alive}
        short: dict[int, list[tuple[float, int]]] = {}
        limit: dict[int, tuple[float, int]] = {}
        heap: list[tuple[float, int, int]] = []
        none = (math.inf, -1)

        def keep(a: _Cluster, items: list[tuple[float, int]]) -> None:
            top = heapq.nsmallest(_SHORTLIST + 1, items)
            limit[a.id] = top.pop() if len(top) > _SHORTLIST else none
            short[a.id] = top
            if top:
                heapq.heappush(heap, (top[0][0], a.id, top[0][1]))

        def scan(a: _Cluster) -> None:
            wa, pa = a.bytes * a.q, 1.0 - a.q
            keep(
                a,
                [
                    (wa * (1.0 - b.q) + b.bytes * b.q * pa, b.id)
                    for b in live.values()
                    if b is not a and (frozen_pairs or not (a.frozen and b.frozen))
                ],
            )

        for c in list(live.values()):
            scan(c)
        while heap:
            d, aid, bid = heapq.heappop(heap)
            lst = short.get(aid)
            if lst is None:
                continue
            if lst and lst[0][1] not in live:
                while lst and lst[0][1] not in live:
                    lst.pop(0)
                if lst:
                    heapq.heappush(heap, (lst[0][0], aid, lst[0][1]))
                elif limit[aid] != none:
                    scan(live[aid])
                continue
            if not lst or lst[0] != (d, bid):
                continue
            if len(live) <= target and d >= min_gain:
                break
            merged = self._merge(live.pop(aid), live.pop(bid))
            for gone in (aid, bid):
                short.pop(gone, None)
                limit.pop(gone, None)
            wm, pm = merged.bytes * merged.q, 1.0 - merged.q
            items: list[tuple[float, int]] = []
            for x in live.values():
                if not frozen_pairs and x.frozen and merged.frozen:
                    continue
                entry = (x.bytes * x.q * pm + wm * (1.0 - x.q), merged.id)
                items.append((entry[0], x.id))
                xl = short[x.id]
                if entry < limit[x.id]:
                    bisect.insort(xl, entry)
                    if len(xl) > _SHORTLIST:
                        limit[x.id] = xl.pop()
                    if xl[0] == entry:
                        heapq.heappush(heap, (entry[0], x.id, merged.id))
            live[merged.id] = merged
            keep(merged, items)

    def _merge(self, a: _Cluster, b: _Cluster) -> _Cluster:
        if a.frozen and b.frozen:
            keep, other = (a, b) if a.order <= b.order else (b, a)
        elif b.frozen:
            keep, other = b, a
        else:
            keep, other = a, b
        merged = _Cluster(
            id=self.next_id,
            members=keep.members + other.members,
            bytes=a.bytes + b.bytes,
            q=a.q * b.q,
            frozen=a.frozen or b.frozen,
            name=keep.name,
            order=keep.order,
        )
        self.next_id += 1
        a.alive = b.alive = False
        self.clusters.append(merged)
        return merged


def _relocate(
    clusters: list[_Cluster],
    movable: set[str],
    info: Mapping[str, tuple[int, float]],
    budget: int,
    min_gain: float,
    make: Callable[[list[str]], _Cluster],
    passes: int = 8,
) -> None:
    """Move single groups to the layer (or a new one, budget permitting) where the
    total expected cost drops most. Deterministic: groups by key, targets by id."""

    def q_of(members: list[str]) -> float:
        return math.prod(info[m][1] for m in members)

    live = [c for c in clusters if c.alive]
    home = {m: c for c in live for m in c.members}
    for _ in range(passes):
        moved = False
        for key in sorted(movable):
            src = home[key]
            if len(src.members) < 2:
                continue
            b, q = info[key]
            rest = [m for m in src.members if m != key]
            rest_q = q_of(rest)
            saved = src.cost() - (src.bytes - b) * (1.0 - rest_q)
            floor = max(1.0, 1e-9 * src.cost())
            choice: tuple[float, int] | None = None
            for c in live:
                if c is not src:
                    gain = saved - ((c.bytes + b) * (1.0 - c.q * q) - c.cost())
                    if gain > floor and (choice is None or (-gain, c.id) < choice):
                        choice = (-gain, c.id)
            alone = saved - b * (1.0 - q)
            if (
                len(live) < budget
                and alone >= max(min_gain, floor)
                and (choice is None or -alone < choice[0])
            ):
                choice = (-alone, -1)
            if choice is None:
                continue
            src.members = rest
            src.bytes -= b
            src.q = rest_q
            if choice[1] == -1:
                dst = make([key])
                clusters.append(dst)
                live.append(dst)
            else:
                dst = next(c for c in live if c.id == choice[1])
                dst.members = [*dst.members, key]
                dst.bytes += b
                dst.q = q_of(dst.members)
            home[key] = dst
            moved = True
        if not moved:
            break


# --------------------------------------------------------------------------- planning


def _probability(groups: Sequence[Group], probabilities: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for g in groups:
        p = probabilities.get(g.key, DEFAULT_PROBABILITY)
        if not g.paths:
            p = 0.0
        elif math.isnan(p):
            p = 1.0
        out[g.key] = min(1.0, max(0.0, p))
    return out


def _layer_name(members: Sequence[str], sizes: Mapping[str, int], taken: set[str]) -> str:
    """A new layer is named after its biggest group (then kept across builds)."""
    lead = min(members, key=lambda k: (-sizes[k], k))
    base = lead[:MAX_NAME_CHARS]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base[: MAX_NAME_CHARS - 4]}~{n}"
    taken.add(name)
    return name


def plan(
    groups: Sequence[Group],
    probabilities: Mapping[str, float],
    max_layers: int,
    previous: PreviousPlan | None = None,
    *,
    min_gain: float = DEFAULT_MIN_GAIN,
    first: FirstLayout = "cost",
) -> Plan:
    """Place every group in exactly one of at most ``max_layers`` layers.

    ``probabilities`` maps group key -> chance it changes per update. ``first`` chooses
    the layout when there is no ``previous`` plan.
    Raises RulesError when the dedicated groups alone exceed the budget.
    """
    if max_layers < 1:
        raise RulesError(f"max_layers {max_layers}: at least one layer is needed")
    by_key: dict[str, Group] = {}
    for g in sorted(groups, key=lambda g: g.key):
        by_key.setdefault(g.key, g)
    if not by_key:
        return Plan(())
    prob = _probability(list(by_key.values()), probabilities)
    info = {k: (g.bytes, 1.0 - prob[k]) for k, g in by_key.items()}
    sizes = {k: g.bytes for k, g in by_key.items()}

    next_id = 0

    def make(members: list[str], name: str = "", order: int = -1) -> _Cluster:
        nonlocal next_id
        c = _Cluster(
            id=next_id,
            members=list(members),
            bytes=sum(info[m][0] for m in members),
            q=math.prod(info[m][1] for m in members),
            frozen=bool(name),
            name=name,
            order=order,
        )
        next_id += 1
        return c

    dedicated: list[_Cluster] = []
    clusters: list[_Cluster] = []
    placed: set[str] = set()
    if previous is not None:
        names: set[str] = set()
        for order, layer in enumerate(previous.layers):
            if not layer.name or layer.name in names:
                continue
            names.add(layer.name)
            members = [k for k in dict.fromkeys(layer.groups) if k in by_key and k not in placed]
            if len(members) == 1 and by_key[members[0]].dedicated:
                placed.add(members[0])
                dedicated.append(make(members, layer.name, order))
                continue
            shared = [k for k in members if not by_key[k].dedicated]
            if any(by_key[k].paths for k in shared):  # never keep a layer of nothing
                placed.update(shared)
                clusters.append(make(shared, layer.name, order))
    new = [k for k in by_key if k not in placed]
    # Groups without paths cost nothing anywhere; they join a layer at the end.
    pathless = [k for k in new if not by_key[k].paths and not by_key[k].dedicated]
    for k in new:
        if by_key[k].dedicated:
            dedicated.append(make([k]))
        elif by_key[k].paths:
            clusters.append(make([k]))
    if pathless and not clusters:
        clusters.append(make(pathless))
        pathless = []

    budget = max_layers - len(dedicated)
    if budget < (1 if clusters else 0):
        raise RulesError(
            f"max_layers {max_layers}: {len(dedicated)} dedicated groups leave no layer for "
            f"the other {sum(len(c.members) for c in clusters)} groups"
        )
    if previous is None and first == "stable":
        singles = {k: (info[k][0], prob[k]) for c in clusters for k in c.members}
        clusters = [make(members) for members in stable.layout(singles, budget, min_gain)]
    else:
        merger = _Merger(clusters, next_id)
        merger.run(budget, min_gain, frozen_pairs=False)
        if len(merger.alive()) > budget:
            merger.run(budget, 0.0, frozen_pairs=True)
        next_id = merger.next_id
        movable = {k for k in new if not by_key[k].dedicated and by_key[k].paths}
        _relocate(clusters, movable, info, budget, min_gain, make)
    if pathless:
        home = min((c for c in clusters if c.alive), key=lambda c: (1.0 - c.q, c.id))
        home.members.extend(pathless)

    final = dedicated + [c for c in clusters if c.alive and c.members]
    return Plan(tuple(_order_and_build(final, by_key, prob, sizes)))


def _rank(c: _Cluster) -> float:
    """Bottom-first order for Docker's classic store, which pulls every layer above the
    first changed one: layer A belongs below B when pA/(bA*qA) < pB/(bB*qB) (swapping
    two neighbours changes the expected bytes by exactly that comparison), so stable
    and big layers go first, volatile and small ones last."""
    p = 1.0 - c.q
    weight = c.bytes * c.q
    if weight > 0:
        return p / weight
    return math.inf if p > 0 else 0.0


def _order_and_build(
    final: list[_Cluster],
    by_key: Mapping[str, Group],
    prob: Mapping[str, float],
    sizes: Mapping[str, int],
) -> list[PlannedLayer]:
    for c in final:
        c.members.sort()
        c.q = math.prod(1.0 - prob[m] for m in c.members)
        c.bytes = sum(sizes[m] for m in c.members)
    kept = sorted((c for c in final if c.frozen), key=lambda c: c.order)
    taken = {c.name for c in kept}
    fresh = [c for c in final if not c.frozen]
    for c in sorted(fresh, key=lambda c: c.members[0]):
        c.name = _layer_name(c.members, sizes, taken)
    fresh.sort(key=lambda c: (_rank(c), c.name))
    ordered: list[_Cluster] = []
    i = 0
    for k in kept:
        while i < len(fresh) and _rank(fresh[i]) < _rank(k):
            ordered.append(fresh[i])
            i += 1
        ordered.append(k)
    ordered.extend(fresh[i:])
    out = []
    for c in ordered:
        gs = [by_key[m] for m in c.members]
        paths = sorted((p for g in gs for p in g.paths), key=encode_path)
        names = sorted({v.rpartition("=")[0] for g in gs if g.packages for v in g.versions})
        out.append(
            PlannedLayer(
                name=c.name,
                groups=tuple(c.members),
                packages=tuple(n for n in names if n),
                paths=tuple(paths),
                bytes=sum(g.bytes for g in gs),
                change_probability=1.0 - c.q,
            )
        )
    return out


# --------------------------------------------------------------------------- output


def _truncated_list(items: Sequence[str], limit: int, sep: str = ",") -> str:
    out: list[str] = []
    used = 0
    for i, item in enumerate(items):
        extra = len(item) + (len(sep) if out else 0)
        more = f"{sep}...(+{len(items) - i} more)"
        if used + extra + (len(more) if i < len(items) - 1 else 0) > limit:
            out.append(f"...(+{len(items) - i} more)")
            break
        out.append(item)
        used += extra
    return sep.join(out)


def to_layer_specs(plan: Plan) -> list[LayerSpec]:
    """The writer's view of a plan, with annotations naming what each layer holds."""
    specs = []
    for layer in plan.layers:
        annotations = [
            ("org.pkgchunk.change-probability", f"{layer.change_probability:.4f}"),
            ("org.pkgchunk.groups", _truncated_list(layer.groups, ANNOTATION_CHARS)),
            ("org.pkgchunk.layer", layer.name),
        ]
        if layer.packages:
            annotations.append(
                ("org.pkgchunk.packages", _truncated_list(layer.packages, ANNOTATION_CHARS))
            )
        what = layer.packages or layer.groups
        noun = "packages" if layer.packages else "groups"
        comment = (
            f"pkgchunk {layer.name}: {len(what)} {noun}, {layer.bytes} bytes: "
            + _truncated_list(what, COMMENT_CHARS, ", ")
        )
        specs.append(
            LayerSpec(
                name=layer.name,
                paths=layer.paths,
                annotations=tuple(sorted(annotations)),
                comment=comment,
            )
        )
    return specs
