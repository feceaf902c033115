"""The public API: the guaranteed import paths, and every module path from before 0.2.0 (one flat package) still
importing, with a DeprecationWarning that names its new path, as the same module object."""
import importlib
import re
import sys
from pathlib import Path

import pytest

import lfem_plugin

# Old path (0.1.x) -> new path (0.2.0): the table users read, docs/DEVELOPMENT.md's "Moved paths".
_DOC = Path(__file__).resolve().parents[1] / "docs" / "DEVELOPMENT.md"
MOVED = dict(re.findall(r"^\| `lfem_plugin\.(\w+)` \| `lfem_plugin\.([\w.]+)` \|$", _DOC.read_text(encoding="utf-8"),
                        re.M))


def test_the_guaranteed_paths_import():
    from lfem_plugin import build_datamanager
    from lfem_plugin.config import load_config
    from lfem_plugin.engine import LFEMEngine
    from lfem_plugin.metrics import re_ranking
    from lfem_plugin.tools.train import build_datamanager as built_in_tools
    assert build_datamanager is built_in_tools and callable(load_config) and callable(re_ranking)
    assert LFEMEngine.__module__ == "lfem_plugin.engine.engines"


def _forget(monkeypatch, old):
    """As in a fresh interpreter: the old path neither imported nor set on the package."""
    monkeypatch.delitem(sys.modules, f"lfem_plugin.{old}", raising=False)
    if old in vars(lfem_plugin):  # (hasattr would import it through the package's __getattr__)
        monkeypatch.delattr(lfem_plugin, old)


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_an_old_module_path_warns_and_gives_the_new_module(monkeypatch, old, new):
    _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match=rf"lfem_plugin\.{old} has moved to lfem_plugin\.{new}"):
        module = importlib.import_module(f"lfem_plugin.{old}")
    assert module is importlib.import_module(f"lfem_plugin.{new}")
    assert sys.modules[f"lfem_plugin.{old}"] is module and lfem_plugin.MOVED == MOVED


def test_import_statements_and_attribute_access_reach_the_new_objects(monkeypatch):
    from lfem_plugin.metrics import re_ranking
    from lfem_plugin.tools import train
    for old in ("train", "rerank", "checkpoint"):
        _forget(monkeypatch, old)
    with pytest.warns(DeprecationWarning, match="lfem_plugin.tools.train"):
        import lfem_plugin.train as old_train
    with pytest.warns(DeprecationWarning, match="lfem_plugin.metrics.rerank"):
        from lfem_plugin.rerank import re_ranking as old_re_ranking
    with pytest.warns(DeprecationWarning, match="lfem_plugin.utils.checkpoint"):
        old_checkpoint = lfem_plugin.checkpoint  # attribute access, never imported before
    assert old_train is train and old_train.build_datamanager is lfem_plugin.build_datamanager
    assert old_re_ranking is re_ranking and old_checkpoint is importlib.import_module("lfem_plugin.utils.checkpoint")


def test_unknown_names_are_still_missing():
    assert not hasattr(lfem_plugin, "no_such_module")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lfem_plugin.no_such_module")


def test_the_moved_paths_table_in_the_docs_is_the_alias_table():
    assert set(MOVED) == {"train", "checkpoint", "inference", "doctor", "compare", "rerank", "visualize", "preflight",
                          "report", "search", "export", "gate_analysis", "evaluation", "progress", "distributed",
                          "run_lock"}  # every flat module of 0.1.x whose path changed
    assert MOVED["train"] == "tools.train" and MOVED["progress"] == "engine.loop"
    assert lfem_plugin.MOVED == MOVED
