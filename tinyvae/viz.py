"""See the tape: Graphviz DOT text of the graph recorded behind a tensor (no graphviz needed)."""
from __future__ import annotations

from .tensor import Tensor


def to_dot(root: Tensor) -> str:
    """DOT text with a box per op and an ellipse per tensor (shape, dtype); edges follow the data.

    Render with ``dot -Tpng graph.dot -o graph.png`` if Graphviz is installed.
    """
    lines = ["digraph tinyvae {", "  rankdir=LR;"]
    seen_t, seen_f = set(), set()
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen_t:
            continue
        seen_t.add(id(t))
        kind = "leaf" if t.creator is None and t.requires_grad else ("const" if t.creator is None else "")
        label = f"{tuple(t.shape)} {t.dtype}" + (f"\\n{kind}" if kind else "")
        lines.append(f'  t{id(t)} [shape=ellipse, label="{label}"];')
        fn = t.creator
        if fn is None:
            continue
        lines.append(f"  f{id(fn)} -> t{id(t)};")
        if id(fn) in seen_f:
            continue
        seen_f.add(id(fn))
        lines.append(f'  f{id(fn)} [shape=box, style=filled, fillcolor=lightblue, label="{fn.name}"];')
        for x in filter(None, fn.inputs):
            lines.append(f"  t{id(x)} -> f{id(fn)};")
            stack.append(x)
    lines.append("}")
    return "\n".join(lines) + "\n"
