"""A layered layout of a model's layer graph, computed here (no graphviz): boxes in rows, edges
as polylines that never cross a box.

Sugiyama in its simplest form: a layer's row is the longest path to it from an input; an edge
that skips rows runs through placeholder slots in the rows between (so ResNet's shortcuts are
lanes beside the main chain); the order within a row comes from a few sweeps of the barycentre
of the neighbours' slots (ties keep the model order, real layers before placeholders). Work is
linear in layers and edges of the *layer* graph (a few hundred), never in neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Down and up barycentre sweeps (ending with a down sweep keeps the main chain straight).
SWEEPS = 4


@dataclass
class Layout:
    """Row and slot of every layer (by name), and each edge's polyline of (slot, row) points."""

    rows: int
    slots: int
    position: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (slot, row)
    edges: list[tuple[str, str, list[tuple[float, float]]]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"rows": self.rows, "slots": self.slots,
                "position": {k: list(v) for k, v in self.position.items()},
                "edges": [{"source": a, "target": b, "points": [list(p) for p in pts]} for a, b, pts in self.edges]}


def layered(names: list[str], inbound: dict[str, list[str]]) -> Layout:
    """Lay out layers given in topological (model) order; ``inbound[name]``: the layers feeding it."""
    known = set(names)
    parents = {n: sorted(set(p for p in inbound.get(n, []) if p in known), key=names.index) for n in names}
    rank: dict[str, int] = {}
    for n in names:
        rank[n] = max((rank[p] + 1 for p in parents[n]), default=0)
    rows = max(rank.values(), default=-1) + 1
    # nodes: real layers (their name) and placeholders ("\0edge k row r"); edges between them
    members: list[list[str]] = [[] for _ in range(rows)]
    for n in names:
        members[rank[n]].append(n)
    up: dict[str, list[str]] = {n: [] for n in names}
    down: dict[str, list[str]] = {n: [] for n in names}
    chains: list[tuple[str, str, list[str]]] = []
    for n in names:
        for p in parents[n]:
            chain = [p]
            for r in range(rank[p] + 1, rank[n]):
                dummy = f"\0{len(chains)}:{r}"
                members[r].append(dummy)
                up[dummy], down[dummy] = [], []
                chain.append(dummy)
            chain.append(n)
            for a, b in zip(chain, chain[1:], strict=False):
                down[a].append(b)
                up[b].append(a)
            chains.append((p, n, chain))
    slot = {v: k for row in members for k, v in enumerate(row)}
    order_key = {v: (v.startswith("\0"), k) for row in members for k, v in enumerate(row)}

    def sweep(row_ids: range, neighbours: dict[str, list[str]]) -> None:
        for r in row_ids:
            def key(v: str) -> tuple:
                near = neighbours[v]
                centre = sum(slot[u] for u in near) / len(near) if near else slot[v]
                return (centre, *order_key[v])
            members[r].sort(key=key)
            slot.update({v: k for k, v in enumerate(members[r])})

    for k in range(SWEEPS):
        if k % 2:
            sweep(range(rows - 2, -1, -1), down)
        else:
            sweep(range(1, rows), up)
    out = Layout(rows, max((len(m) for m in members), default=0))
    out.position = {n: (slot[n], rank[n]) for n in names}
    for p, n, chain in chains:
        out.edges.append((p, n, [(float(slot[v]), float(rank[v] if v in rank else int(v.rsplit(":", 1)[1])))
                                 for v in chain]))
    return out
