"""The package's import graph: no cycles (imports inside functions and importlib.import_module
calls count too) and no private name (``_x``) imported from another module. A module imports the
modules it names; the parent packages Python initialises on the way are not counted."""
import ast
from pathlib import Path

import lowbit

PACKAGE = Path(lowbit.__file__).resolve().parent


def _modules():
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name, path, modules):
    """(target module, imported names) for every import statement of one module."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                prefix = base[: len(base) - node.level + 1]
                target = ".".join(prefix + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in modules]
            for sub in submodules:
                yield f"{target}.{sub}", []
            yield target, [n for n in names if n not in submodules]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value, []  # importlib.import_module("lowbit.x"): an import too


def _graph():
    modules = _modules()
    graph, private = {m: set() for m in modules}, []
    for name, path in modules.items():
        for target, names in _imports(name, path, modules):
            if target not in modules:
                continue
            if target != name and not name.startswith(target + "."):  # a package's own __init__ runs first anyway
                graph[name].add(target)
            private += [f"{name} imports {target}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__") and target != name]
    return graph, private


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph, _ = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(
        " <-> ".join(c) + "\n    " + "; ".join(f"{a} -> {sorted(graph[a] & set(c))}" for a in c) for c in cycles)


def test_no_private_name_crosses_modules():
    _, private = _graph()
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def test_the_checker_sees_deferred_imports_and_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    modules = _modules()
    name = next(n for n in modules if n.endswith(".nn"))
    deferred = [t for t, _ in _imports(name, modules[name], modules)]
    assert deferred, "the walker found no imports in lowbit.nn"
