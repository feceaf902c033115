import importlib
import subprocess
import sys

import pytest
import torch

import lfem_plugin
from lfem_plugin import _torchreid
from lfem_plugin.registry import DATASETS, MODELS, Registry

TORCHREID = _torchreid.root()


def test_registry_register_get_and_miss_lists_choices():
    reg = Registry("things")

    @reg.register
    def alpha():
        return 1

    assert reg.get("alpha") is alpha
    reg.register(alpha)  # same object again: harmless
    with pytest.raises(KeyError, match=r"choices: \['alpha'\]"):
        reg.get("beta")


def test_registry_clash_with_different_object_raises():
    reg = Registry("things")
    reg.register(lambda: 1, name="x")
    with pytest.raises(KeyError, match="already registered"):
        reg.register(lambda: 2, name="x")


def test_models_reach_torchreid_factory():
    factory = _torchreid.model_factory()
    for name in ("lfem_vit", "lfem_vit_tiny", "vit_transreid"):
        assert factory[name] is MODELS.get(name)
    model = TORCHREID.models.build_model("lfem_vit_tiny", num_classes=3, pretrained=False, use_gpu=False)
    assert isinstance(model, torch.nn.Module)


def test_datasets_reach_torchreid_registry():
    table = _torchreid.image_dataset_factory()
    assert len(DATASETS) > 0
    for name, cls in DATASETS.items():
        assert table[name] is cls


def test_register_all_is_idempotent_and_survives_reload():
    before = dict(_torchreid.model_factory())
    lfem_plugin.register_all()
    lfem_plugin.register_all()
    importlib.reload(importlib.import_module("lfem_plugin.models.lfem_vit"))
    lfem_plugin.register_all()
    assert set(_torchreid.model_factory()) == set(before)


def test_clash_with_foreign_object_raises():
    factory = _torchreid.model_factory()
    original = factory["lfem_vit_tiny"]
    try:
        factory["lfem_vit_tiny"] = lambda **kw: None
        with pytest.raises(KeyError, match="lfem_vit_tiny"):
            lfem_plugin.register_all()
    finally:
        factory["lfem_vit_tiny"] = original
    with pytest.raises(KeyError, match="resnet50"):
        _torchreid.add_model("resnet50", MODELS.get("lfem_vit_tiny"))


def test_root_resolver_installed_and_simulated_upstream_layout(monkeypatch, tmp_path):
    assert _torchreid.root().__name__ in _torchreid.ROOT_CANDIDATES
    assert _torchreid.resolve_root(_torchreid.ROOT_CANDIDATES) is TORCHREID
    # Upstream 1.4.0 layout: the subpackages sit directly under the top-level package (no `.reid`).
    pkg = tmp_path / "fake_upstream_reid"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import models, data, engine, utils\n")
    for sub in ("models", "data", "engine", "utils"):
        (pkg / sub).mkdir()
        (pkg / sub / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    resolved = _torchreid.resolve_root(("fake_upstream_reid.reid", "fake_upstream_reid"))
    assert resolved.__name__ == "fake_upstream_reid"


def test_missing_torchreid_error_is_actionable(monkeypatch):
    monkeypatch.setattr(_torchreid, "ROOT_CANDIDATES", ("no_such_pkg_a", "no_such_pkg_b"))
    _torchreid.root.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install torchreid"):
            _torchreid.root()
    finally:
        monkeypatch.undo()
        _torchreid.root.cache_clear()
        assert _torchreid.root() is TORCHREID


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "lfem_plugin", "--help"], capture_output=True, text=True, check=True)
    from lfem_plugin.cli import COMMANDS
    for name in COMMANDS:
        assert name in out.stdout


def test_import_shows_plugin_names_in_torchreid_list():
    out = subprocess.run([sys.executable, "-c", "import lfem_plugin, torchreid; torchreid.models.show_avai_models()"],
                         capture_output=True, text=True, check=True)
    assert "lfem_vit" in out.stdout and "vit_transreid" in out.stdout
