"""The design's import rules (`design.md`), read from the source: every `import` statement of
every module, at module level or inside a function, parsed with `ast` (nothing is imported)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("compass_jax", "pipelines")
SCRIPTS = ("benchmarks", "convert")
# Modules below the interop layer: configuration, trees, placement, files.
CORE = {f"compass_jax.{m}" for m in ("config", "tree", "sharding", "atomic", "jsonio")}
# The training side and the data readers: they stay below the data builders.
TRAINING = {
    f"compass_jax.{m}"
    for m in ("losses", "gradcache", "train", "trainer", "optim", "checkpoint", "experiment")
} | {"compass_jax.metrics_log", "compass_jax.data"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    files = [p for top in PACKAGES + SCRIPTS for p in sorted((ROOT / top).rglob("*.py"))]
    return {_module_name(p): p for p in files}


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> list[tuple[str, int]]:
    """`(imported module, line)` for every import in the file. `from a import b` names `a.b`
    when that is a module of this repository, else `a`; relative imports are resolved."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(importers, forbidden, allowed=()) -> list[str]:
    """`file:line imports module` for every direct import of a `forbidden` module by a module
    matching `importers` (a predicate), except from the `allowed` modules."""
    return [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
        for name, targets in GRAPH.items()
        if importers(name) and not _within(name, allowed)
        for target, line in targets
        if _within(target, forbidden)
    ]


def _reachable(start: str) -> dict[str, str]:
    """Every compass_jax module `start` imports, directly or through others: `{module: the
    chain that reaches it}`."""
    chains, todo = {start: start}, [start]
    while todo:
        name = todo.pop()
        for target, _ in GRAPH.get(name, ()):
            if target.startswith("compass_jax") and target in MODULES and target not in chains:
                chains[target] = f"{chains[name]} -> {target}"
                todo.append(target)
    return chains


def test_the_import_graph_is_read():
    # the parser sees the imports a rule is about (a test that cannot fail is no test)
    assert ("compass_jax.cli", 9) in GRAPH["convert.export_hf"]
    assert any(t == "compass_jax.commands.flags" for t, _ in GRAPH["compass_jax.commands.merge"])
    assert any(t == "flax" for t, _ in GRAPH["compass_jax.models.layers"])
    assert any(t == "compass_jax.workflows.merge" for t, _ in GRAPH["compass_jax.commands.merge"])
    assert any(t.startswith("pipelines") for t, _ in GRAPH["compass_jax.commands.data"])
    assert "compass_jax.interop.keymap" in _reachable("compass_jax.interop.save")


def test_only_models_imports_flax():
    everything = lambda name: True
    assert _violations(everything, ["flax"], allowed=["compass_jax.models"]) == []


def test_only_cli_and_convert_import_commands():
    everything = lambda name: True
    allowed = ["compass_jax.cli", "convert", "compass_jax.commands"]  # commands share flags
    assert _violations(everything, ["compass_jax.commands"], allowed=allowed) == []


@pytest.mark.parametrize("banned", ["compass_jax.encoder", "compass_jax.eval",
                                    "compass_jax.workflows", "compass_jax.fp8_quality",
                                    "compass_jax.commands"])  # fmt: skip
def test_interop_never_reaches_the_encoder_eval_or_workflows(banned):
    interop = [m for m in MODULES if _within(m, ["compass_jax.interop"])]
    chains = [_reachable(m).get(b) for m in interop for b in MODULES if _within(b, [banned])]
    assert [c for c in chains if c] == []


@pytest.mark.parametrize("core", sorted(CORE))
def test_core_modules_never_reach_interop(core):
    reached = _reachable(core)
    assert [c for m, c in reached.items() if _within(m, ["compass_jax.interop"])] == []


def test_benchmarks_use_the_library_not_commands():
    scripts = lambda name: _within(name, ["benchmarks"])
    assert _violations(scripts, ["compass_jax.commands"]) == []


@pytest.mark.parametrize("module", sorted(TRAINING))
def test_data_and_training_never_reach_pipelines(module):
    for start in [m for m in MODULES if _within(m, [module])]:
        imported = {t for m in _reachable(start) for t, _ in GRAPH.get(m, ())}
        assert not [t for t in imported if _within(t, ["pipelines"])], start


def test_pipelines_only_from_the_data_command_and_the_demo():
    library = lambda name: _within(name, ["compass_jax"])
    allowed = ["compass_jax.commands.data", "compass_jax.workflows.demo"]
    assert _violations(library, ["pipelines"], allowed=allowed) == []


def test_no_import_cycles_in_compass_jax():
    """Tarjan's strongly connected components over every compass_jax import (lazy ones too):
    a component of more than one module, or a module importing itself, is a cycle."""
    nodes = [m for m in MODULES if m.startswith("compass_jax")]
    edges = {m: sorted({t for t, _ in GRAPH[m] if t in MODULES and t in nodes}) for m in nodes}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    assert cycles == []


def test_commands_are_small():
    """A command parses its arguments and makes one call: no module of `commands/` is long."""
    files = (ROOT / "compass_jax" / "commands").glob("*.py")
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in files}
    assert len(sizes) >= 9 and {n: s for n, s in sizes.items() if s > 150} == {}
