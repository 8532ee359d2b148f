"""The core's import graph: modules, the rooms (subpackages) they sit in, circles, and a picture.

``python -m bench imports [--png docs/img/imports.png]`` prints the rooms, their floors and
arrows, and any circle; with ``--png`` it draws the rooms on their floors. The layout test
(tests/test_layout.py) asserts on the same graph: no circle among modules, and ``method/``
importing nothing from ``job/`` or ``commands/``.

Every import statement counts, also those inside functions (a lazy import still ties two
modules together), except those under ``if TYPE_CHECKING:``, which never run; the circles
are also sought with those counted (``types=True``: a type a module names is a module its
reader must follow).
``from pkg import name`` is an arrow to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the core's subpackages; its other modules sit in the room "root" (``tapweight`` itself: its own)
ROOMS = ("method", "plugin", "job", "commands")


def _sources(package_dirs: list[Path]) -> dict[str, Path]:
    """Module name -> file, for every .py file under each package folder."""
    found = {}
    for folder in package_dirs:
        for file in sorted(folder.rglob("*.py")):
            parts = list(file.relative_to(folder.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = file
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the statements under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imported(file: Path, module: str, types: bool = False) -> list[tuple[str, str | None]]:
    """(module, name) pairs ``file`` imports: ``import a.b`` is ``("a.b", None)``, ``from a import
    b`` is ``("a", "b")``; relative imports resolved against ``module``; those under ``if
    TYPE_CHECKING:`` only with ``types``."""
    tree = ast.parse(file.read_text(), str(file))
    skip = set() if types else _type_checking_lines(tree)
    pairs = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            pairs += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level if file.name != "__init__.py" else None]
                if file.name == "__init__.py" and node.level > 1:
                    package = package[: 1 - node.level]
                base = ".".join([*package, base] if base else package)
            pairs += [(base, alias.name) for alias in node.names]
    return pairs


def module_graph(package_dirs: list[Path], types: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of ``package_dirs`` it imports (no self-arrows; ``types``: the
    imports under ``if TYPE_CHECKING:`` too)."""
    modules = _sources(package_dirs)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for base, item in imported(file, name, types):
            target = f"{base}.{item}" if item and f"{base}.{item}" in modules else base
            while target and target not in modules:  # import a.b.c of a module a.b's attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def room(module: str) -> str:
    """``tapweight.method.engine`` -> ``method``; ``tapweight`` itself (the public API a plugin
    imports) -> ``tapweight``; ``__main__`` -> ``commands``; the core's other top-level modules -> ``root``;
    another package (a domain) is its own room."""
    parts = module.split(".")
    if module == "tapweight.__main__":  # python -m tapweight: the command line
        return "commands"
    if parts[0] != "tapweight" or module == "tapweight":
        return parts[0]
    return parts[1] if len(parts) > 2 and parts[1] in ROOMS else "root"


def room_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """Room -> {room it imports: number of module arrows}."""
    rooms: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for source, targets in graph.items():
        rooms[room(source)]
        for target in targets:
            if room(target) != room(source):
                rooms[room(source)][room(target)] += 1
    return {r: dict(t) for r, t in rooms.items()}


def floors(rooms: dict[str, dict[str, int]]) -> dict[str, int]:
    """Each room's floor: 0 imports no other room, n imports rooms below n (rooms in a circle
    share the floor of the first one reached)."""
    floor: dict[str, int] = {}

    def height(name: str, seen: frozenset) -> int:
        if name not in floor:
            below = [height(t, seen | {name}) for t in rooms.get(name, {}) if t not in seen | {name}]
            floor[name] = 1 + max(below, default=-1)
        return floor[name]

    for name in rooms:
        height(name, frozenset())
    return floor


def core_dirs() -> list[Path]:
    """The core and the packages that plug into it, as laid out in this repository."""
    return [REPO / "tapweight", REPO / "tapweight_mol", REPO / "tapweight_nlp",
            *sorted(p for p in (REPO / "plugins").glob("*/tapweight_*") if p.is_dir())]


def draw(rooms: dict[str, dict[str, int]], floor: dict[str, int], path: Path) -> None:
    """The rooms as boxes on their floors (lowest at the bottom), an arrow per imported room."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_floor: dict[int, list[str]] = defaultdict(list)
    for name in sorted(rooms, key=lambda r: (floor[r], r)):
        by_floor[floor[name]].append(name)
    where = {name: (i - (len(names) - 1) / 2, level)
             for level, names in by_floor.items() for i, name in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9, 1.4 * (max(by_floor) + 1)))
    for source, targets in rooms.items():
        for target, count in targets.items():
            (x0, y0), (x1, y1) = where[source], where[target]
            ax.annotate("", (x1, y1 + 0.18), (x0, y0 - 0.18),
                        arrowprops={"arrowstyle": "->", "color": "0.55", "lw": 0.6 + 0.15 * count})
    for name, (x, y) in where.items():
        core = name in (*ROOMS, "root", "tapweight")
        label = {"tapweight": "tapweight (the API plugins use)", "root": "root (config, errors, ...)"}.get(name, name)
        ax.text(x, y, f"{name}/" if name in ROOMS else label, ha="center", va="center", fontsize=11,
                bbox={"boxstyle": "round", "fc": "#dbe9f6" if core else "#f3e3c3", "ec": "0.3"})
    ax.set_xlim(min(x for x, _ in where.values()) - 0.8, max(x for x, _ in where.values()) + 0.8)
    ax.set_ylim(-0.6, max(by_floor) + 0.6)
    ax.axis("off")
    ax.set_title("tapweight: rooms (blue: the core, tan: domains) and what they import (arrows point down)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__.split("\n")[0])
    parser.add_argument("--png", type=Path, help="draw the rooms into this PNG")
    args = parser.parse_args(argv)
    graph = module_graph(core_dirs())
    rooms = room_graph(graph)
    floor = floors(rooms)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} arrows; {len(rooms)} rooms, "
          f"{sum(map(len, rooms.values()))} room arrows, {max(floor.values()) + 1} floors")
    for name in sorted(rooms, key=lambda r: (-floor[r], r)):
        print(f"  floor {floor[name]}  {name:<18} -> {', '.join(sorted(rooms[name])) or '-'}")
    found = circles(graph)
    typed = [c for c in circles(module_graph(core_dirs(), types=True)) if c not in found]
    print(f"circles: {len(found)}" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
    print(f"circles through type-only imports: {len(typed)}" + "".join(f"\n  {' <-> '.join(c)}" for c in typed))
    if args.png:
        draw(rooms, floor, args.png)
        print(f"picture -> {args.png}")


if __name__ == "__main__":
    main()
