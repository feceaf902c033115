"""TransReID's and fast-reid's checkpoint layouts load as the same model; a load that fills little of the model
warns, naming what stayed at init (issue 38, case 5: ``utils/state_layout.py``, ``utils/checkpoint.py``)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lfem_plugin.config import load_config
from lfem_plugin.registry import MODELS
from lfem_plugin.tools.inference import extract_features, load_trained
from lfem_plugin.utils.checkpoint import load_trained_weights
from lfem_plugin.utils.state_layout import from_transreid_layout, unwrap_state_dict

from ..tools.test_search import _images

SIZE = ["data.height", "64", "data.width", "32"]


def _to_transreid(state_dict):
    """Our ``vit_transreid`` state dict under TransReID's names (``model/make_model.py``, ``build_transformer_local``
    and ``vit_pytorch.TransReID``), written out here by hand, plus the tensors TransReID keeps and never runs: the
    base's last block (copied into b1/b2), its final norm and its ImageNet ``fc``; every key with ``module.``."""
    out = {}
    depth = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("backbone.blocks."))
    for key, value in state_dict.items():
        if key == "backbone.sie.camera_ids":
            continue  # TransReID has no such buffer: SIE row i is camera i
        if key == "backbone.sie.table":
            name = "base.sie_embed"
        elif key.startswith("backbone.jpm."):
            branch, part, rest = key.split(".", 4)[2:5]
            name = f"{'b1' if branch == 'global_branch' else 'b2'}.{0 if part == 'block' else 1}.{rest}"
        elif key.startswith("backbone."):
            name = "base." + key[len("backbone."):]
        else:  # heads.N.bn.* / heads.N.classifier.*
            _, index, part, rest = key.split(".", 3)
            stem = "bottleneck" if part == "bn" else "classifier"
            name = f"{stem}{'' if index == '0' else '_' + index}.{rest}"
        out[name] = value
        if key.startswith("backbone.jpm.global_branch.block."):
            out[f"base.blocks.{depth}.{key.split('.', 4)[4]}"] = value.clone()
    out["base.norm.weight"], out["base.norm.bias"] = torch.ones(64), torch.zeros(64)
    out["base.fc.weight"], out["base.fc.bias"] = torch.zeros(1000, 64), torch.zeros(1000)
    return {"module." + k: v for k, v in out.items()}


def _features(path, images, opts=()):
    model, cfg = load_trained(str(path), None, list(opts))
    feats, _ = extract_features(model, images, 64, 32, cfg.data.norm_mean, cfg.data.norm_std, cameras=[0, 1])
    return feats


def test_a_transreid_checkpoint_gives_the_same_features_as_our_layout(tmp_path):
    torch.manual_seed(0)
    model = MODELS.get("vit_transreid_tiny")(num_classes=4, img_size=(64, 32), num_cameras=2)
    cfg = load_config(None, ["model.name", "vit_transreid_tiny", "use_gpu", "False", *SIZE])
    torch.save({"state_dict": model.state_dict(), "config": cfg.dump()}, tmp_path / "ours.pth")
    torch.save(_to_transreid(model.state_dict()), tmp_path / "transreid.pth")  # TransReID saves a bare state dict
    torch.save({"model": model.state_dict(), "iteration": 5}, tmp_path / "fastreid.pth")
    _images(tmp_path / "q", ["0001_c1_a.png", "0002_c2_b.png"], 0)
    images = sorted(str(p) for p in (tmp_path / "q").iterdir())
    ours = _features(tmp_path / "ours.pth", images)
    theirs = _features(tmp_path / "transreid.pth", images, ["model.name", "vit_transreid_tiny", *SIZE])
    wrapped = _features(tmp_path / "fastreid.pth", images, ["model.name", "vit_transreid_tiny", *SIZE])
    assert ours.shape == (2, 5 * 64) and np.isfinite(ours).all()
    np.testing.assert_array_equal(theirs, ours)
    np.testing.assert_array_equal(wrapped, ours)


def test_the_layout_helpers_on_hand_built_keys():
    t = torch.zeros(1)
    assert unwrap_state_dict({"model": {"module.a": t, "module.b": t}}) == {"a": t, "b": t}
    assert unwrap_state_dict({"module.a": t, "b": t}) == {"module.a": t, "b": t}  # not every key: left as is
    renamed = from_transreid_layout({"base.blocks.0.x": t, "base.blocks.1.x": t, "base.norm.weight": t,
                                     "base.fc.bias": t, "b1.0.x": t, "b2.1.weight": t, "bottleneck.bias": t,
                                     "bottleneck_3.running_mean": t, "classifier_4.weight": t})
    assert sorted(renamed) == ["backbone.blocks.0.x", "backbone.jpm.global_branch.block.x",
                               "backbone.jpm.local_branch.norm.weight", "heads.0.bn.bias",
                               "heads.3.bn.running_mean", "heads.4.classifier.weight"]
    ours = {"backbone.blocks.0.x": t, "heads.0.bn.bias": t}
    assert from_transreid_layout(ours) == ours


def test_load_weights_that_fill_little_of_the_model_warn_naming_what_stayed(tmp_path, caplog):
    source = MODELS.get("vit_transreid_tiny")(num_classes=4)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "transreid.pth")
    target = MODELS.get("lfem_vit_tiny")(num_classes=7)
    with caplog.at_level(logging.INFO):
        load_trained_weights(target, tmp_path / "transreid.pth")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, caplog.text
    text = warned[0].getMessage()
    assert "stayed at their initial values" in text and "fusion.lfems.0" in text and "heads.5.bn" in text
    assert "heads.0.classifier" not in text.split("initial values:")[1]  # another identity count: expected


def test_load_weights_that_leave_only_classifiers_say_so_at_info(tmp_path, caplog):
    source = MODELS.get("lfem_vit_tiny")(num_classes=4)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "a.pth")
    with caplog.at_level(logging.INFO):
        load_trained_weights(MODELS.get("lfem_vit_tiny")(num_classes=9), tmp_path / "a.pth")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "loaded 109 of 116 tensors" in caplog.text


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_load_weights_unwraps_fastreid_and_torchreid(tmp_path, wrapper, caplog):
    source = MODELS.get("lfem_vit_tiny")(num_classes=4)
    torch.save({wrapper: {"module." + k: v for k, v in source.state_dict().items()}}, tmp_path / "w.pth")
    target = MODELS.get("lfem_vit_tiny")(num_classes=4)
    load_trained_weights(target, tmp_path / "w.pth")
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
