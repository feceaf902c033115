"""``lfem-reid analyze-gates``: occluded fraction per JPM group, gate statistics, the command on a tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lfem_plugin.cli import main
from lfem_plugin.config import load_config, model_kwargs
from lfem_plugin.tools.gate_analysis import gate_statistics, group_occlusion
from lfem_plugin.registry import MODELS


def test_gate_statistics_on_a_hand_made_case():
    fractions = np.array([[0.0, 0.6], [0.05, 0.9]])
    stats = gate_statistics(fractions, 1 - fractions)  # gates falling exactly with occlusion
    assert stats["spearman"] == pytest.approx(-1.0)
    assert stats["gate_mean_occluded_ge_50"] == pytest.approx((0.4 + 0.1) / 2)
    assert stats["gate_mean_occluded_le_10"] == pytest.approx((1.0 + 0.95) / 2)
    assert (stats["pairs"], stats["pairs_occluded_ge_50"], stats["pairs_occluded_le_10"]) == (4, 2, 2)
    assert gate_statistics(fractions, fractions)["spearman"] == pytest.approx(1.0)
    assert np.isnan(gate_statistics(fractions, np.ones_like(fractions))["spearman"])  # constant gates


def test_group_occlusion_of_the_top_half():
    model = MODELS.get("lfem_vit_tiny")(num_classes=3)  # 64x32 input, stride 8: a 7 x 3 grid of 16-pixel patches
    cols = model.backbone.patch_embed.grid_size[1]
    # rows 0..31 of the input covered: patch rows 0-2 fully (pixels 0-31), row 3 half (24-39), rows 4-6 not at all
    row_cover = np.array([1, 1, 1, 0.5, 0, 0, 0])
    expected = [np.mean([row_cover[i // cols] for i in group]) for group in model.backbone.group_token_indices()]
    # the box is given in the pixels of a 128x64 image: the model sees it scaled by one half
    np.testing.assert_allclose(group_occlusion((0, 0, 64, 64), (128, 64), model), expected)
    np.testing.assert_allclose(group_occlusion((0, 0, 128, 64), (128, 64), model), 1.0)
    np.testing.assert_allclose(group_occlusion((0, 0, 0, 0), (128, 64), model), 0.0)


def test_analyze_gates_command_on_a_tiny_orl_checkpoint(tmp_path, capsys):
    cfg = load_config(None, ["model.name", "lfem_vit_tiny", "data.sources", "['orl_faces_occluded']",
                             "data.targets", "['orl_faces_occluded']", "data.root", str(tmp_path), "use_gpu", "False"])
    torch.manual_seed(0)
    model = MODELS.get("lfem_vit_tiny")(num_classes=20, **model_kwargs(cfg, 2, [0, 1]))
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": cfg.dump()}, tmp_path / "m.pth")
    assert main(["analyze-gates", "--weights", str(tmp_path / "m.pth"), "--out", str(tmp_path / "out")]) == 0
    assert "Spearman(occluded fraction, gate)" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "gates.json").read_text())
    fractions, gates = np.array(result["fractions"]), np.array(result["query_gates"])
    assert fractions.shape == gates.shape == (40, 4) and (fractions >= 0).all() and (fractions <= 1).all()
    assert fractions.sum(1).min() > 0  # every query's occluder covers some group
    assert len(result["gallery_gate_mean"]) == 4 and len(result["per_group"]) == 4
    assert (tmp_path / "out" / "gates_scatter.png").is_file() and (tmp_path / "out" / "gates_bars.png").is_file()


def test_analyze_gates_refuses_a_model_without_lfem(tmp_path, capsys):
    cfg = load_config(None, ["model.name", "vit_transreid_tiny", "data.root", str(tmp_path), "use_gpu", "False"])
    model = MODELS.get("vit_transreid_tiny")(num_classes=20, **model_kwargs(cfg, 2, [0, 1]))
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": cfg.dump()}, tmp_path / "m.pth")
    assert main(["analyze-gates", "--weights", str(tmp_path / "m.pth"), "--out", str(tmp_path / "out")]) == 2
    assert "no LFEM" in capsys.readouterr().err
