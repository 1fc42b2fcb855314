"""Editing the world itself: change one fact (s, r, o) of the knowledge graph to (s, r, o') and measure how far a
graph is from another.

The knowledge-graph half of the recovery study (Figure 10 of the comprehensive study, `kelocate.studies.recovery`):
in a graph, editing a fact and editing it back restores the graph exactly, which this module makes checkable.

`edit_world` returns a new graph and leaves its input alone. It keeps the edge's key and attributes and writes the
new edge where the old one was in the edge order, so for a graph built from its own edge list (every world loaded
from `world.json` is) the round trip o -> o' -> o also gives back the same iteration order of nodes, successors
and predecessors (the world's biographies read in-edges in order). `graph_distance` counts the nodes and edges
(with keys and attributes) that differ, as multisets; `graphs_identical` is networkx's `graphs_equal` plus that
count being 0.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import networkx as nx

from kelocate.errors import KelocateError

Edge = tuple[Hashable, Hashable, Hashable]  # (subject, object, key)


@dataclass(frozen=True)
class FactEdit:
    """One fact of the graph and the object it is changed to: (subject) -[relation]-> (old) becomes (new)."""

    subject: Hashable
    relation: str
    old: Hashable
    new: Hashable

    def reverse(self) -> FactEdit:
        """The edit back: new -> old."""
        return FactEdit(self.subject, self.relation, self.new, self.old)


def find_edge(graph: nx.MultiDiGraph, subject: Hashable, relation: str, old_object: Hashable | None = None) -> Edge:
    """The (subject, object, key) of the one edge `subject -[relation]-> old_object` (any object when None, which
    then must be unique); one line of error otherwise."""
    if subject not in graph:
        raise KelocateError(f"no node {subject!r} in the graph; pass a node id such as {next(iter(graph), '?')!r}")
    found = [(subject, o, k) for _, o, k, d in graph.out_edges(subject, keys=True, data=True)
             if d.get("relation") == relation and (old_object is None or o == old_object)]
    if not found:
        target = f" -> {old_object!r}" if old_object is not None else ""
        raise KelocateError(f"{subject!r} has no {relation!r} edge{target}; pick one of its facts")
    if len(found) > 1:
        raise KelocateError(f"{subject!r} has {len(found)} {relation!r} edges; name the old object to change")
    return found[0]


def edit_world(graph: nx.MultiDiGraph, subject: Hashable, relation: str, new_object: Hashable,
               old_object: Hashable | None = None) -> nx.MultiDiGraph:
    """A new graph in which the fact `subject -[relation]-> old_object` points at `new_object` instead (same key,
    same attributes, same place in the edge order); `graph` is not changed. `new_object` must be a node of the
    graph, and the subject must not already have that edge to it."""
    u, v, key = find_edge(graph, subject, relation, old_object)
    if new_object not in graph:
        raise KelocateError(f"no node {new_object!r} in the graph; the new object must be an entity of the world")
    if new_object == v:
        raise KelocateError(f"{subject!r} -[{relation}]-> {new_object!r} is already the fact; pick another object")
    if graph.has_edge(u, new_object, key):
        raise KelocateError(f"{subject!r} already has edge {key!r} to {new_object!r}; pick another object")
    out = graph.__class__()
    out.graph.update(copy.deepcopy(graph.graph))
    out.add_nodes_from((n, copy.deepcopy(d)) for n, d in graph.nodes(data=True))
    for a, b, k, d in graph.edges(keys=True, data=True):
        out.add_edge(a, new_object if (a, b, k) == (u, v, key) else b, key=k, **copy.deepcopy(d))
    return out


def apply_edits(graph: nx.MultiDiGraph, edits: Sequence[FactEdit]) -> nx.MultiDiGraph:
    """`graph` with every edit applied in order (a new graph)."""
    for edit in edits:
        graph = edit_world(graph, edit.subject, edit.relation, edit.new, edit.old)
    return graph


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def graph_signature(graph: nx.MultiDiGraph) -> tuple[Counter, Counter, str]:
    """Nodes (id, attributes), edges (subject, object, key, attributes) as multisets and the graph's own
    attributes, as canonical JSON text: equal signatures mean equal graphs, whatever the iteration order."""
    nodes = Counter(_canon([repr(n), d]) for n, d in graph.nodes(data=True))
    edges = Counter(_canon([repr(u), repr(v), repr(k), d]) for u, v, k, d in graph.edges(keys=True, data=True))
    return nodes, edges, _canon(graph.graph)


def graph_distance(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> int:
    """How many nodes and edges (with keys and attributes) are in one graph and not the other, counted as
    multisets, plus 1 if the graphs' own attributes differ: 0 for identical graphs, 2 per changed fact."""
    nodes_a, edges_a, attrs_a = graph_signature(a)
    nodes_b, edges_b, attrs_b = graph_signature(b)
    diff = (nodes_a - nodes_b) + (nodes_b - nodes_a) + (edges_a - edges_b) + (edges_b - edges_a)
    return sum(diff.values()) + int(attrs_a != attrs_b)


def graphs_identical(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> bool:
    """Same nodes, edges, keys and attributes (networkx's `graphs_equal`, and `graph_distance` 0)."""
    return nx.utils.graphs_equal(a, b) and graph_distance(a, b) == 0


def same_order(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> bool:
    """Identical, and nodes, edges and every node's predecessors iterate in the same order."""
    return (graphs_identical(a, b) and list(a.nodes) == list(b.nodes)
            and list(a.edges(keys=True)) == list(b.edges(keys=True))
            and all(list(a.pred[n]) == list(b.pred[n]) for n in a))


def round_trips(graph: nx.MultiDiGraph, edits: Sequence[FactEdit], rounds: int) -> list[dict[str, object]]:
    """Edit every fact o -> o', then each back o' -> o (a second edit, not an undo), `rounds` times; per round the
    distance from the original after the edits (`forward_distance`) and after the edits back (`distance`),
    whether the graph is then identical and iterates in the same order."""
    if rounds < 1:
        raise KelocateError(f"rounds must be at least 1, got {rounds}")
    out: list[dict[str, object]] = []
    current = graph
    for k in range(1, rounds + 1):
        edited = apply_edits(current, edits)
        current = apply_edits(edited, [e.reverse() for e in edits])
        out.append({"round": k, "forward_distance": graph_distance(graph, edited),
                    "distance": graph_distance(graph, current), "identical": graphs_identical(graph, current),
                    "same_order": same_order(graph, current)})
    return out
