"""torchreid's conventions kept: registered names build their model, torchreid's key meanings, its scripts' imports,
its checkpoints, its result block, its engines fed a multi-view model."""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lfem_plugin import _torchreid
from lfem_plugin.tools import train
from lfem_plugin.utils.checkpoint import load_trained_weights
from lfem_plugin.cli import build_parser, main
from lfem_plugin.commands.train import config_from_args as _config
from lfem_plugin.config import load_config, model_kwargs
from lfem_plugin.models.pretrained import WEIGHT_SOURCES, WeightSource, resolve_weights
from lfem_plugin.registry import MODELS

from .helpers import CPU_CONFIG, SMALL, TR, tiny_engine

REPO = Path(__file__).resolve().parents[1]


def _cli_config(*argv: str):
    args = build_parser().parse_args(["train", *argv])
    return _config(args)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_name_builds_its_own_model_through_the_cli(name):
    settings = MODELS.get(name).settings
    cfg = _cli_config("--model", name, "model.pretrained", "False")
    model = train.build_model(cfg, num_classes=5, num_cameras=2, camera_ids=[0, 1])
    assert model.num_views == settings.get("num_views", 3)
    assert model.use_lfem == settings.get("use_lfem", True)
    assert model.eval_feature == settings.get("eval_feature", "final")
    assert model.backbone.patch_embed.stride == settings["stride"]
    assert model.backbone.patch_embed.img_size == tuple(settings["img_size"])
    assert (cfg.data.height, cfg.data.width) == tuple(settings["img_size"])  # the transforms get the same size
    assert len(cfg.lfem.views) == model.num_views


def test_a_key_the_user_sets_overrides_the_variant_default():
    cfg = _cli_config("--model", "lfem_vit_tiny", "lfem.stride", "16", "data.height", "96")
    assert (cfg.lfem.stride, cfg.data.height, cfg.data.width) == (16, 96, 32)
    assert _cli_config("--model", "lfem_vit_tiny").lfem.stride == 8


@pytest.mark.parametrize("name, key, value, fixed", [
    ("vit_transreid", "lfem.use_lfem", "True", "False"),
    ("vit_transreid_tiny", "lfem.views", "['original','erased']", "['original']"),
    ("lfem_deit_small_patch16_s16_256x128", "lfem.stride", "11", "16"),
    ("lfem_vit_base_patch16_s11_256x128", "data.height", "384", "256"),
])
def test_an_explicit_key_contradicting_the_name_is_an_error_naming_both(name, key, value, fixed):
    with pytest.raises(ValueError) as err:
        _cli_config("--model", name, key, value)
    message = str(err.value)
    assert name in message and f"fixes {key} {fixed}" in message and "KEY VALUE overrides" in message


def test_a_contradiction_in_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "baseline.yaml"
    path.write_text("model: {name: vit_transreid}\nlfem: {use_lfem: true}\n")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_config(path)
    assert main(["train", "--config-file", str(path)]) == 2


def test_a_stored_config_reloads_to_the_same_model():
    cfg = load_config(None, ["model.name", "vit_transreid_tiny"])
    again = load_config(None, text=cfg.dump())
    assert again == cfg and again.lfem.use_lfem is False and list(again.lfem.views) == ["original"]


def test_pretrained_path_is_the_imagenet_file_key():
    cfg = load_config(None, ["model.name", "lfem_vit_tiny", "model.pretrained_path", "/weights/jx.pth"])
    assert model_kwargs(cfg, 2)["pretrained_path"] == "/weights/jx.pth"
    assert model_kwargs(load_config(None, ["model.load_weights", "/x.pth"]), 2)["pretrained_path"] is None


def _trained_checkpoint(path: Path, numpy_rank1: bool = False, num_classes: int = 6) -> dict:
    model = MODELS.get("lfem_vit_tiny")(num_classes=num_classes, loss="triplet")
    torch.manual_seed(3)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    state = {"state_dict": model.state_dict(), "epoch": 3,
             "rank1": np.float32(0.5) if numpy_rank1 else 0.5, "optimizer": {}}
    torch.save(state, path)
    return state["state_dict"]


def test_load_weights_loads_trained_weights_like_torchreid(tmp_path, caplog):
    weights = _trained_checkpoint(tmp_path / "model.pth.tar-3")
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, loss="triplet")  # another identity count: classifiers differ
    with caplog.at_level(logging.INFO, logger="lfem_plugin.utils.checkpoint"):
        load_trained_weights(model, tmp_path / "model.pth.tar-3")
    own = model.state_dict()
    assert torch.equal(own["backbone.cls_token"], weights["backbone.cls_token"])
    assert not torch.equal(own["heads.0.classifier.weight"], weights["heads.0.classifier.weight"][:4])
    assert "heads.0.classifier.weight" in caplog.text  # listed as not loaded, as torchreid does


def test_evaluating_trained_weights_through_train_with_load_weights(tmp_path, synthetic_root, capsys):
    _trained_checkpoint(tmp_path / "model.pth.tar-3")
    code = main(["train", "--config-file", str(CPU_CONFIG), "--root", str(synthetic_root), *SMALL, "test.evaluate",
                 "True", "model.load_weights", str(tmp_path / "model.pth.tar-3"), "data.save_dir",
                 str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert code == 0
    assert "** Results **" in out and re.search(r"^mAP: \d+\.\d%$", out, re.M) and re.search(r"^Rank-1  : ", out, re.M)


def test_an_imagenet_file_given_as_load_weights_says_to_use_pretrained_path(tmp_path, synthetic_root, capsys):
    torch.save({"patch_embed.proj.weight": torch.zeros(3, 3, 16, 16), "cls_token": torch.zeros(1, 1, 3)},
               tmp_path / "jx_vit.pth")
    code = main(["train", "--config-file", str(CPU_CONFIG), "--root", str(synthetic_root), *SMALL, "data.save_dir",
                 str(tmp_path / "run"), "model.load_weights", str(tmp_path / "jx_vit.pth")])
    err = capsys.readouterr().err
    assert code == 2 and f"model.pretrained_path {tmp_path / 'jx_vit.pth'}" in err


def test_install_requires_accepts_upstream_torchreid():
    text = (REPO / "setup.py").read_text()
    assert '"torchreid>=0.2.5"' in text and "torchreid==" not in text


def test_torchreid_scripts_imports_work_after_import_lfem_plugin():
    """What upstream ``scripts/main.py`` imports, on the installed (PyPI 0.2.5) layout, in a fresh interpreter."""
    code = ("import torchreid, lfem_plugin\n"
            "from torchreid.utils import (Logger, check_isfile, set_random_seed, collect_env_info, "
            "resume_from_checkpoint, load_pretrained_weights, compute_model_complexity, FeatureExtractor)\n"
            "import torchreid.models, torchreid.data.transforms\n"
            "m = torchreid.models.build_model('lfem_vit_tiny', num_classes=3, loss='softmax', pretrained=False)\n"
            "assert type(m).__name__ == 'LFEMViT'\n"
            "assert 'orl_faces_occluded' in torchreid.data.datasets.__image_datasets\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_layout_alias_is_a_no_op_upstream(monkeypatch):
    upstream = types.ModuleType("torchreid")
    monkeypatch.setattr(_torchreid, "root", lambda: upstream)
    before = dict(sys.modules)
    assert _torchreid.alias_pypi_layout() == 0
    assert dict(sys.modules) == before


def test_the_layout_alias_replaces_nothing(monkeypatch):
    own = types.ModuleType("torchreid.utils")
    monkeypatch.setitem(sys.modules, "torchreid.utils", own)
    _torchreid.alias_pypi_layout()
    assert sys.modules["torchreid.utils"] is own


def test_torchreids_own_load_checkpoint_reads_its_numpy_rank1(tmp_path):
    _trained_checkpoint(tmp_path / "model.pth.tar-3", numpy_rank1=True)
    state = TR.utils.load_checkpoint(str(tmp_path / "model.pth.tar-3"))  # torch.load with the weights-only default
    assert float(state["rank1"]) == 0.5


def test_a_torchreid_checkpoint_is_used_by_extract_with_model(tmp_path, capsys):
    _trained_checkpoint(tmp_path / "model.pth.tar-3", numpy_rank1=True)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        from PIL import Image
        Image.fromarray(np.full((64, 32, 3), 40 * i, np.uint8)).save(images / f"000{i}_c1_f0.jpg")
    base = ["extract", "--weights", str(tmp_path / "model.pth.tar-3"), "--images", str(images), "--device", "cpu",
            "--out", str(tmp_path / "f.npy")]
    assert main(base) == 2
    assert "--model NAME" in capsys.readouterr().err
    assert main(base[:1] + ["--model", "lfem_vit_tiny"] + base[1:]) == 0
    assert np.load(tmp_path / "f.npy").shape == (3, 64)


def test_a_torchreid_checkpoint_is_tested_with_model(tmp_path, synthetic_root, capsys):
    _trained_checkpoint(tmp_path / "model.pth.tar-3", numpy_rank1=True)
    code = main(["test", "--weights", str(tmp_path / "model.pth.tar-3"), "--model", "lfem_vit_tiny", "--root",
                 str(synthetic_root), "data.sources", "['synthetic_reid']", "data.targets", "['synthetic_reid']",
                 "data.save_dir", str(tmp_path / "t"), "use_gpu", "False", "data.workers", "0"])
    assert code == 0 and "** Results **" in capsys.readouterr().out


def test_engine_prints_torchreids_result_block_and_returns_the_results(synthetic_root, capsys):
    cfg = load_config(CPU_CONFIG, ["data.root", str(synthetic_root), *SMALL])
    dm = train.build_datamanager(cfg)
    engine, _ = train.build_engine(cfg, dm)
    results = engine.run(test_only=True, save_dir=str(synthetic_root / "out"), ranks=[1, 5])
    out = capsys.readouterr().out
    assert list(results) == ["synthetic_reid"] and 0 <= results["synthetic_reid"]["mAP"] <= 1
    block = out[out.index("** Results **"):].splitlines()[:4]
    assert block[1] == f"mAP: {results['synthetic_reid']['mAP']:.1%}" and block[2] == "CMC curve"
    assert block[3] == f"Rank-1  : {results['synthetic_reid']['cmc'][0]:.1%}"


def test_use_metric_cuhk03_is_rejected():
    with pytest.raises(ValueError, match="use_metric_cuhk03"):
        tiny_engine()._evaluate("x", None, None, use_metric_cuhk03=True)


def test_a_multiview_model_fed_one_view_warns_once_naming_what_is_lost(caplog):
    model = MODELS.get("lfem_vit_tiny")(num_classes=4)
    model.train()
    with caplog.at_level(logging.WARNING):
        model(torch.randn(4, 3, 64, 32))
        model(torch.randn(4, 3, 64, 32))
    warnings = [r for r in caplog.records if "trains without" in r.getMessage()]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "erased, cropped" in text and "camera embedding" in text and "lfem_plugin.build_datamanager" in text
    caplog.clear()
    fresh = MODELS.get("lfem_vit_tiny")(num_classes=4).train()
    with caplog.at_level(logging.WARNING):
        fresh(torch.randn(3, 4, 3, 64, 32), camera=torch.tensor([0, 1, 0, 1]))  # all views and cameras: silent
    assert not [r for r in caplog.records if "trains without" in r.getMessage()]


def test_build_datamanager_is_public():
    import lfem_plugin
    assert lfem_plugin.build_datamanager is train.build_datamanager


def test_on_a_terminal_one_compact_bar_and_the_full_terms_in_the_log(synthetic_root, monkeypatch, capsys, caplog):
    cfg = load_config(CPU_CONFIG, ["data.root", str(synthetic_root), *SMALL, "train.max_epoch", "1",
                                   "train.print_freq", "1", "train.checkpoint_period", "0"])
    dm = train.build_datamanager(cfg)
    engine, _ = train.build_engine(cfg, dm)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    engine.epoch, engine.max_epoch = 0, 1
    with caplog.at_level(logging.INFO, logger="lfem_plugin.progress"):
        engine.train(print_freq=1)
    captured = capsys.readouterr()
    assert "epoch: [" not in captured.out  # torchreid's per-iteration line is not printed next to the bar
    lines = [r.getMessage() for r in caplog.records if r.name == "lfem_plugin.progress"]
    assert len(lines) == len(dm.train_loader) and "tri/local4" in lines[0] and "gate/1" in lines[0]
    assert "forward_backward" not in engine.__dict__  # the wrapper is gone after the epoch


def test_the_cli_keeps_full_progress_lines_off_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        main([])
        record = logging.LogRecord("lfem_plugin.progress", logging.INFO, __file__, 1, "terms", None, None)
        other = logging.LogRecord("lfem_plugin.engine", logging.INFO, __file__, 1, "saved", None, None)
        assert root.handlers and all(not h.filter(record) and h.filter(other) for h in root.handlers)
    finally:
        root.handlers = saved


def test_offline_weights_error_names_the_hub_cache_and_what_works_where(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(WEIGHT_SOURCES, "offline", WeightSource("http://127.0.0.1:9/none.pth", "none.pth",
                                                                (0.5,) * 3, (0.5,) * 3))
    with pytest.raises(RuntimeError) as err:
        resolve_weights("offline")
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "none.pth") in message
    assert "build_model" in message and "model.pretrained_path" in message
    docs = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    assert "$TORCH_HOME/hub/checkpoints" in (REPO / "docs" / "TORCHREID.md").read_text()
    assert not any("$TORCH_HOME/checkpoints" in doc.read_text() for doc in docs)


def test_double_dash_ends_the_target_list_before_the_overrides():
    cfg = _cli_config("--model", "lfem_vit_tiny", "-t", "orl_faces", "--", "train.max_epoch", "3")
    assert list(cfg.data.targets) == ["orl_faces"] and cfg.train.max_epoch == 3


def test_test_visualize_writes_the_cmc_curve_and_gate_pictures(tmp_path, synthetic_root, capsys):
    _trained_checkpoint(tmp_path / "model.pth.tar-3")
    out = tmp_path / "t"
    code = main(["test", "--weights", str(tmp_path / "model.pth.tar-3"), "--model", "lfem_vit_tiny", "--visualize",
                 "--root", str(synthetic_root), "data.sources", "['synthetic_reid']", "data.targets",
                 "['synthetic_reid']", "data.save_dir", str(out), "use_gpu", "False", "data.workers", "0"])
    assert code == 0 and (out / "cmc.png").is_file()
    gates = sorted(p.name for p in (out / "lfem_gates_synthetic_reid").iterdir())
    assert len(gates) == 4 and gates[0].startswith("000_") and gates[0].endswith("_lfem.png")
    assert list((out / "visrank_synthetic_reid").iterdir())


# ---- a broken environment names the package that is really missing ------------------------------------------
_BLOCK_TENSORBOARD = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "tensorboard":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
sys.argv = ["lfem-reid", "--version"]
runpy.run_module("lfem_plugin", run_name="__main__")
"""


def test_a_missing_torchreid_dependency_is_named(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", _BLOCK_TENSORBOARD], capture_output=True, text=True, env=env,
                          check=False, timeout=120)
    assert proc.returncode != 0
    assert "pip install tensorboard" in proc.stderr and "cannot find torchreid" not in proc.stderr


def test_a_missing_torchreid_is_still_named_torchreid():
    from lfem_plugin._torchreid import resolve_root
    with pytest.raises(ImportError, match="cannot find torchreid"):
        resolve_root(("no_such_torchreid_layout",))
