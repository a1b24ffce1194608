"""The layers of the package: the imports run down only, models and data sources know nothing of the run
that uses them, and the scripts build what they time through dgm_run.train.build."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# What the models and data sources may not import: the run, the loop and what they use.
ABOVE_MODELS_AND_DATA = (
    "dgm_run.cli",
    "dgm_run.train",
    "dgm_run.trainer",
    "dgm_run.trainer_config",
    "dgm_run.step",
    "dgm_run.graph",
    "dgm_run.optim",
    "dgm_run.evaluate",
    "dgm_run.config",
    "dgm_run.composition",
    "dgm_run.tensorboard",
    "dgm_run.figures",
    "dgm_run.checkpoint",
    "dgm_run.device",
)
# What a script may not import: the trainer's parts and the models (the straightforward reference, which
# mirrors a model's networks, excepted).
BELOW_BUILD = ("dgm_run.trainer", "dgm_run.step", "dgm_run.graph", "dgm_run.optim", "dgm_run.models")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[0] == "scripts":
        parts = ("dgm_run", "commands", *parts[1:])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The dgm_run modules `path` imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name.startswith("dgm_run")}


FILES = {module_name(p): p for folder in ("dgm_run", "scripts") for p in (REPO / folder).rglob("*.py")}
GRAPH = {name: {m for m in imports(path) if m in FILES and m != name} for name, path in FILES.items()}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_circle():
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path[path.index(name) :], name))}"
        if name in done:
            return
        for imported in GRAPH[name]:
            visit(imported, (*path, name))
        done.add(name)

    for name in GRAPH:
        visit(name, ())


def test_models_and_data_know_nothing_of_the_run():
    for name, imported in GRAPH.items():
        if within(name, ("dgm_run.models", "dgm_run.data")):
            assert not [m for m in imported if within(m, ABOVE_MODELS_AND_DATA)], name


def test_scripts_build_through_train_build():
    for name, imported in GRAPH.items():
        if name.startswith("dgm_run.commands.") and name != "dgm_run.commands.straightforward":
            assert not [m for m in imported if within(m, BELOW_BUILD)], name
