"""The package's import graph: dependencies point down, tools import the library, no cycle.

Every ``import`` of the package's sources is read (function-level ones too: an import inside a function is an
arrow all the same), each module is given its layer, and an arrow may only point to a lower layer or to a module
of its own layer, with no cycle. Pure static reading: nothing here imports the package.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: source folder -> the package it installs as (pyproject.toml's package-dir).
FOLDERS = {"fusedrnn": "fusedrnn", "kernels": "fusedrnn.kernels", "autotune": "fusedrnn.autotune"}

#: Layers, lowest first: a module may import modules of its own layer or below, never above.
LAYERS = [
    # plain data and process settings
    ("fusedrnn.cells", "fusedrnn.settings"),
    # the kernels, and the lookup of their configurations
    ("fusedrnn.kernels", "fusedrnn.kernels.cells", "fusedrnn.kernels.step", "fusedrnn.kernels.persistent",
     "fusedrnn.kernels.tile", "fusedrnn.autotune", "fusedrnn.autotune.keys", "fusedrnn.autotune.cache",
     "fusedrnn.autotune.spaces", "fusedrnn.autotune.runtime", "fusedrnn.reference"),
    # what runs: the one place that decides, the one place that launches, the time layout
    ("fusedrnn.dispatch", "fusedrnn.calls", "fusedrnn.schedule"),
    ("fusedrnn.launch",),
    ("fusedrnn.ops", "fusedrnn.aten"),
    ("fusedrnn.functional",),
    ("fusedrnn.modules",),
    ("fusedrnn.convert",),
    ("fusedrnn",),
]
#: Tools: they import the library (any layer) and each other; nothing in LAYERS imports them.
TOOL_PREFIXES = ("fusedrnn.autotune.tuner", "fusedrnn.autotune.harness", "fusedrnn.autotune.cli",
                 "fusedrnn.autotune.presets", "fusedrnn.autotune.precompile", "fusedrnn.autotune.__main__",
                 "fusedrnn.demo")


def _modules() -> dict:
    """module name -> source path, for every module of the package."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set) -> set:
    """The package modules that ``name`` (at ``path``) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()

    def add(target: str, names=()):
        for n in names:  # ``from pkg import mod`` imports the submodule
            if f"{target}.{n}" in known:
                found.add(f"{target}.{n}")
                continue
            if target in known:
                found.add(target)
        if not names and target in known:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts:
                    found.add(".".join(parts))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1] if node.level > 1 else here
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target, [a.name for a in node.names])
    found.discard(name)
    return found


def _graph() -> dict:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _layer(name: str):
    if name.startswith(TOOL_PREFIXES):
        return "tool"
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    return None


def test_every_module_has_a_place():
    unplaced = sorted(n for n in _graph() if _layer(n) is None)
    assert not unplaced, f"modules without a layer in tests/test_layers.py: {unplaced}"


def test_imports_point_down():
    upward = []
    for name, targets in _graph().items():
        mine = _layer(name)
        for target in sorted(targets):
            theirs = _layer(target)
            if theirs == "tool" and mine != "tool":
                upward.append(f"{name} -> {target} (the library imports a tool)")
            elif mine != "tool" and theirs is not None and theirs > mine:
                upward.append(f"{name} (layer {mine}) -> {target} (layer {theirs})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
