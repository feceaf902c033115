"""``lfem-reid analyze-gates``: occluded fraction per JPM group, gate statistics, the command on a tiny model."""
from __future__ import annotations

import json
import os
from pathlib import Path

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


# ---- occluder boxes as data ----------------------------------------------------------------------------------------

def _tiny_checkpoint(tmp_path, *opts, cameras=(0, 1)):
    cfg = load_config(None, ["model.name", "lfem_vit_tiny", "data.root", str(tmp_path), "use_gpu", "False", *opts])
    torch.manual_seed(0)
    model = MODELS.get("lfem_vit_tiny")(num_classes=20, **model_kwargs(cfg, len(cameras), list(cameras)))
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": cfg.dump()}, tmp_path / "m.pth")
    return model, cfg


def _orl_boxes_as_drawn(query, train, seed=0, coverage=(0.2, 0.5)):
    """Each ORL query's occluder re-drawn from its seed, as analyze-gates did before boxes were data."""
    from PIL import Image

    from lfem_plugin.data.datasets import occluder_box
    boxes = []
    for i, (path, _, _) in enumerate(query):
        rng = np.random.default_rng([seed, i])
        rng.integers(len(train))  # the occluder-source image drawn first
        with Image.open(path) as img:
            boxes.append((occluder_box(img.height, img.width, rng, coverage), (img.height, img.width)))
    return boxes


def test_orl_boxes_file_round_trip_equals_the_drawn_boxes(tmp_path):
    from lfem_plugin.data.datasets import OrlFacesOccluded, find_orl_root, orl_split
    from lfem_plugin.data.occlusion import find_occlusion_file, read_occlusion_file
    from lfem_plugin.tools.gate_analysis import analyze_gates
    model, cfg = _tiny_checkpoint(tmp_path)
    train, query, _ = orl_split(find_orl_root(""))
    occluded = OrlFacesOccluded(root=str(tmp_path), mode="query", verbose=False).query
    path = find_occlusion_file([q[0] for q in occluded])
    assert str(path.parent) == os.path.dirname(occluded[0][0])
    boxes = read_occlusion_file(path)
    drawn = _orl_boxes_as_drawn(query, train)
    assert [(b.top_left_height_width(), b.image_height_width()) for b in boxes.values()] == drawn
    result = analyze_gates(model, cfg, str(tmp_path))
    expected = np.stack([group_occlusion(box, size, model) for box, size in drawn])
    np.testing.assert_array_equal(np.array(result["fractions"]), expected)
    np.testing.assert_equal(result["queries"], gate_statistics(expected, np.array(result["query_gates"])))


def test_analyze_gates_reads_a_market_layout_boxes_file(tmp_path, capsys):
    from lfem_plugin.data.occlusion import write_occlusion_file

    from ..data.test_market_layout import NAMES, write_market_folder
    base = write_market_folder(tmp_path / "mine")
    kinds = ["person", "scene"]
    boxes = {name: {"box_xyxy": [0, 8, 8, 16], "image_size_wh": [8, 16], "kind": kind}
             for name, kind in zip(NAMES["query_occluded"], kinds)}
    write_occlusion_file(base / "occlusion.json", boxes)
    # trained on the folder (cameras 0-2): the occluded queries get their cameras' SIE rows
    _tiny_checkpoint(tmp_path, "data.market_layout.folder", "mine", "data.sources", "['market_layout']",
                     cameras=(0, 1, 2))
    assert main(["analyze-gates", "--weights", str(tmp_path / "m.pth"), "--dataset", "market_layout_occluded",
                 "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "gates.json").read_text())
    # the bottom half of every query is covered: the top group (rows 0-2 of 7) sees nothing of it
    fractions = np.array(result["fractions"])
    assert fractions.shape == (2, 4) and result["dataset"] == "market_layout_occluded"
    model = MODELS.get("lfem_vit_tiny")(num_classes=3)
    np.testing.assert_allclose(fractions[0], group_occlusion((8, 0, 8, 8), (16, 8), model))
    # statistics per occluder kind the file names: each over its own queries
    gates = np.array(result["query_gates"])
    order = [Path(p).name for p in sorted(str(p) for p in (base / "query_occluded").iterdir())]
    for kind in kinds:
        rows = [i for i, name in enumerate(order) if boxes[name]["kind"] == kind]
        np.testing.assert_equal(result["by_kind"][kind], gate_statistics(fractions[rows], gates[rows]))


@pytest.mark.parametrize("entry, message", [
    ({}, "needs 'box_xyxy'"),
    ({"box_xyxy": [0, 0, 9, 16], "image_size_wh": [8, 16]}, "outside its image_size_wh"),
    ({"box_xyxy": [0, 0, 8, 16], "image_size_wh": [16, 32]}, "is for a"),
])
def test_bad_boxes_files_name_the_fault(tmp_path, capsys, entry, message):
    from lfem_plugin.data.occlusion import write_occlusion_file

    from ..data.test_market_layout import NAMES, write_market_folder
    base = write_market_folder(tmp_path / "mine")
    write_occlusion_file(tmp_path / "boxes.json", {name: entry for name in NAMES["query_occluded"]})
    _tiny_checkpoint(tmp_path, "data.market_layout.folder", str(base))
    assert main(["analyze-gates", "--weights", str(tmp_path / "m.pth"), "--dataset", "market_layout_occluded",
                 "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "boxes.json" in err


def test_a_query_without_a_box_is_an_error(tmp_path, capsys):
    from lfem_plugin.data.occlusion import write_occlusion_file

    from ..data.test_market_layout import NAMES, write_market_folder
    base = write_market_folder(tmp_path / "mine")
    first = NAMES["query_occluded"][0]
    write_occlusion_file(base / "occlusion.json", {first: {"box_xyxy": [0, 0, 8, 8], "image_size_wh": [8, 16]}})
    _tiny_checkpoint(tmp_path, "data.market_layout.folder", "mine")
    assert main(["analyze-gates", "--weights", str(tmp_path / "m.pth"), "--dataset", "market_layout_occluded",
                 "--out", str(tmp_path / "out")]) == 2
    assert "no box for 1 of 2 queries" in capsys.readouterr().err


def test_analyze_gates_on_another_folder_under_the_source_name_uses_the_cross_domain_sie(tmp_path, capsys):
    import re
    import shutil

    from lfem_plugin.data.occlusion import write_occlusion_file

    from ..data.test_market_layout import NAMES, write_market_folder
    base = write_market_folder(tmp_path / "mine")
    _tiny_checkpoint(tmp_path, "data.market_layout.folder", "mine", "data.sources", "['market_layout']",
                     cameras=(0, 1, 2))
    other = tmp_path / "other"  # issue 38 case 1: the same name, other data, cameras 4 and 5 the model never saw
    shutil.copytree(base, other)
    for path in list(other.rglob("*.jpg")):
        path.rename(path.with_name(re.sub(r"_c\d_", "_c5_" if "test" in path.parent.name else "_c6_", path.name)))
    names = [re.sub(r"_c\d_", "_c6_", n) for n in NAMES["query_occluded"]]
    write_occlusion_file(other / "occlusion.json", {n: {"box_xyxy": [0, 8, 8, 16], "image_size_wh": [8, 16]}
                                                    for n in names})
    assert main(["analyze-gates", "--weights", str(tmp_path / "m.pth"), "--dataset", "market_layout_occluded",
                 "--set", "data.market_layout.folder", "other", "--out", str(tmp_path / "out")]) == 0
