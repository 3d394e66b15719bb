"""Fail if phalanx's modules import each other in a circle (issue 17).

    python tools/import_cycles.py

Run imports only: an import made for type checkers (under ``TYPE_CHECKING``)
may close a circle, as annotations naming a class of a higher layer do.
Needs ``grimp`` (installed with ``import-linter``).
"""

from __future__ import annotations

import sys

import grimp


def cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=True)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges)))
    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


if __name__ == "__main__":
    circles = cycles("phalanx")
    for circle in circles:
        print("import circle:", " -> ".join(circle))
    print(f"{len(circles)} import circle(s) among phalanx's modules")
    sys.exit(1 if circles else 0)
