"""A feature's family across the ladder of dictionary sizes, as a tree (paper §8.11, feature splitting).

    tree = family_tree(ladder, (d, f), parents_of, children_of)

The `splits` table (analyses/splitting.py) links a feature of one dictionary (the parent) to a feature
of a larger one (the child) when their masked activation cosine is above about 0.4. The paper shows
splitting as families: base64 is one feature at 512, three at 4,096. A feature's family here is
every feature under the same ancestors in the smallest dictionary: go up from the feature through
its parents until no parent is left (the roots, normally in the smallest dictionary), then down from
the roots through their children to the largest dictionary.

Only links between consecutive dictionaries of the `ladder` make the tree; the smallest → largest
shortcut that splitting.py also stores would skip levels. A child with two parents appears under
each, its subtree drawn under the first and marked `repeat` under the others. Pure and torch-free:
the links come from the two lookups, which the browser answers from SQLite (queries.py) and tests
from a hand-made table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

Node = tuple[int, int]
"""(dictionary id, feature)."""


class Link(NamedTuple):
    """One row of `splits`: parent → child with the masked activation cosine."""

    parent: Node
    child: Node
    cosine: float


Lookup = Callable[[Sequence[Node]], Iterable[Link]]
"""The links whose child (for `parents_of`) or parent (for `children_of`) is one of the given nodes."""


def family_tree(
    ladder: Sequence[int], focus: Node, parents_of: Lookup, children_of: Lookup, max_nodes: int = 60
) -> dict[str, Any] | None:
    """The family of `focus` as nested nodes, or None when it has no link to a neighbouring size.

    Args:
        ladder: the dictionary ids of the ladder, smallest first; a link counts when its child's
            dictionary comes right after its parent's.
        focus: the feature whose family this is.
        parents_of, children_of: the links of given nodes (any superset of the consecutive ones).
        max_nodes: at most this many distinct features, the focus's line of ancestors always among
            them; each level keeps the children of highest cosine first, and a node counts the
            children it loses in `more` (their own descendants are not looked up).

    Returns:
        {"roots": [node, ...], "n_nodes": distinct features shown, "truncated": distinct children
        left out}; each node {"dictionary_id", "feature", "cosine" (of the link from its parent;
        None for a root), "focus", "line" (the focus or one of its ancestors), "repeat", "more",
        "children"}.
    """
    level = {d: k for k, d in enumerate(ladder)}

    def consecutive(link: Link) -> bool:
        p, c = level.get(link.parent[0]), level.get(link.child[0])
        return p is not None and c == p + 1

    if focus[0] not in level:
        return None
    # 1) up: the focus's ancestors, level by level
    line: set[Node] = {focus}
    up: dict[Node, list[Link]] = {}
    frontier = [focus]
    while frontier:
        found = [x for x in parents_of(frontier) if consecutive(x) and x.child in line]
        for x in found:
            up.setdefault(x.child, []).append(x)
        frontier = sorted({x.parent for x in found} - line)
        line.update(frontier)
    roots = sorted((n for n in line if n not in up), key=lambda n: (level[n[0]], n[1]))

    # 2) down from the roots, level by level, within the budget (the focus's line always kept)
    kept, dropped = set(roots), set()
    down: dict[Node, list[Link]] = {}
    more: dict[Node, int] = {}
    frontier = roots
    while frontier:
        found = [x for x in children_of(frontier) if consecutive(x) and x.parent in kept]
        nxt = []
        for x in sorted(found, key=lambda x: (x.child not in line, -x.cosine, x.child)):
            if x.child not in kept:
                if len(kept) >= max_nodes and x.child not in line:
                    dropped.add(x.child)
                    more[x.parent] = more.get(x.parent, 0) + 1
                    continue
                kept.add(x.child)
                nxt.append(x.child)
            down.setdefault(x.parent, []).append(x)
        frontier = sorted(set(nxt))
    if len(kept) == 1:
        return None

    drawn: set[Node] = set()

    def node(n: Node, cosine: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"dictionary_id": n[0], "feature": n[1], "cosine": cosine, "focus": n == focus,
                               "line": n in line, "repeat": n in drawn, "more": 0 if n in drawn else more.get(n, 0),
                               "children": []}  # fmt: skip
        if n in drawn:
            return out
        drawn.add(n)
        links = sorted(down.get(n, []), key=lambda x: (-x.cosine, x.child))
        out["children"] = [node(x.child, x.cosine) for x in links]
        return out

    tree = [node(r, None) for r in roots]
    return {"roots": tree, "n_nodes": len(kept), "truncated": len(dropped)}


def nodes_of(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a tree from `family_tree`, depth first (repeats included)."""
    out, stack = [], list(reversed(tree["roots"]))
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(reversed(n["children"]))
    return out
