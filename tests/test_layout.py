"""The floors of the package, read from the source's imports (every import, inside functions too):
models and data know nothing of training, scripts go through the public API, and no module imports
one that imports it back."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The modules of training, logging and the run that a model or a data source must not know.
ABOVE_MODELS_AND_DATA = {
    "dgm_run.trainer",
    "dgm_run.trainer_config",
    "dgm_run.config",
    "dgm_run.composition",
    "dgm_run.tensorboard",
    "dgm_run.figures",
    "dgm_run.checkpoint",
    "dgm_run.device",
    "dgm_run.train",
    "dgm_run.step",
    "dgm_run.graph",
    "dgm_run.optim",
    "dgm_run.evaluate",
    "dgm_run.cli",
}
# What scripts must not reach into: they build through dgm_run.train.build and public functions.
BELOW_THE_API = {"dgm_run.trainer", "dgm_run.step", "dgm_run.graph", "dgm_run.optim"}
# The one script built on the models' networks: the textbook exact sum the benchmark and tests compare with.
REFERENCE_SCRIPT = "straightforward.py"


def module_name(path: Path) -> str:
    """dgm_run/models/vae/vae.py -> dgm_run.models.vae.vae; scripts/x.py -> dgm_run.commands.x (as installed)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "scripts":
        parts[0:1] = ["dgm_run", "commands"]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The project modules `path` imports anywhere in it: `from a.b import c` counts a.b.c when that is a
    module of the project, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module)
    return {name for name in found if name.split(".")[0] in ("dgm_run", "hydra_plugins")}


SOURCES = sorted([*(REPO / "dgm_run").rglob("*.py"), *(REPO / "scripts").glob("*.py")])
MODULES = {module_name(p): p for p in SOURCES}


def test_models_and_data_know_nothing_of_training():
    offending = {
        module_name(p): sorted(imports(p) & ABOVE_MODELS_AND_DATA)
        for p in SOURCES
        if module_name(p).startswith(("dgm_run.models", "dgm_run.data"))
    }
    assert not {k: v for k, v in offending.items() if v}


def test_scripts_use_the_public_api():
    scripts = [p for p in SOURCES if p.parent.name == "scripts"]
    assert scripts
    for path in scripts:
        reached = imports(path) & BELOW_THE_API
        if path.name != REFERENCE_SCRIPT:
            reached |= {name for name in imports(path) if name.startswith("dgm_run.models")}
        assert not reached, f"{path.name} imports {sorted(reached)}"


def test_no_import_circle():
    graph = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_checks_see_the_imports():
    """The reader finds what is there: the trainer imports the model contract, a model its family."""
    assert "dgm_run.models.base" in imports(REPO / "dgm_run" / "trainer.py")
    adgm = imports(REPO / "dgm_run" / "models" / "semi_supervised" / "adgm.py")
    assert {"dgm_run.models.semi_supervised.auxiliary", "dgm_run.models.nn"} <= adgm


def test_the_readme_layout_names_every_module():
    """README's "Layout" names every module of the package and every script, by its file name."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Adding a model")]
    named = set(re.findall(r"[\w]+\.py", layout))
    files = {p.name for p in SOURCES if p.name != "__init__.py"}
    assert not files - named, f"README's Layout does not name {sorted(files - named)}"
