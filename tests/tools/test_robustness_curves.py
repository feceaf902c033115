"""``lfem-reid robustness``: the sweep on generated Market-layout folders, plugin and torchreid checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfem_plugin import _torchreid
from lfem_plugin.cli import main
from lfem_plugin.config import load_config, model_kwargs
from lfem_plugin.metrics import evaluate_rank
from lfem_plugin.engine.evaluation import query_gallery_distances
from lfem_plugin.registry import MODELS
from lfem_plugin.tools.inference import extract_features, load_trained
from lfem_plugin.tools.robustness_report import relative_auc

SWEEP = ["--kinds", "person", "erase", "--positions", "bottom", "side", "--areas", "0", "0.3", "0.6"]


def write_market(base: Path, ids=(1, 2, 3, 4), size=(48, 24), train_ids=(50, 51)) -> Path:
    """query/ (one per identity, camera 1), bounding_box_test/ (two per identity: cameras 1 and 2) and
    bounding_box_train/ (``train_ids``), images whose colours depend on the identity."""
    rng = np.random.default_rng(1)
    for split, pids, cams in (("query", ids, (1,)), ("bounding_box_test", ids, (1, 2)),
                              ("bounding_box_train", train_ids, (1, 2))):
        (base / split).mkdir(parents=True, exist_ok=True)
        for pid in pids:
            colours = rng.integers(0, 255, (4, 2, 3))
            for i, cam in enumerate(cams):
                img = np.kron(colours, np.ones((size[0] // 4, size[1] // 2, 1))) + rng.normal(0, 15, (*size, 3))
                name = f"{pid:04d}_c{cam}s1_{i + (10 if split == 'query' else 0):06d}_00.jpg"
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(base / split / name)
    return base


def plugin_checkpoint(path: Path, name="lfem_vit_tiny", num_classes=7, root="") -> Path:
    """A randomly initialised plugin model saved as ``lfem-reid train`` does (config + model_args): trained on
    other data (7 identities, 64x32, 2 cameras) than the folders it is evaluated on."""
    cfg = load_config(None, ["model.name", name, "data.root", root, "use_gpu", "False", "data.height", "64",
                             "data.width", "32"])
    torch.manual_seed(0)
    model = MODELS.get(name)(num_classes=num_classes, **model_kwargs(cfg, 2, [0, 1]))
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": cfg.dump(),
                "model_args": model.build_args()._asdict()}, path)
    return path


def _run(tmp_path, weights, data, *extra):
    return main(["robustness", "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "out"),
                 *SWEEP, *extra])


def _result(tmp_path):
    return json.loads((tmp_path / "out" / "robustness.json").read_text())


def test_area_zero_is_the_plain_evaluation_and_the_outputs_are_written(tmp_path, capsys):
    data = write_market(tmp_path / "market")
    weights = plugin_checkpoint(tmp_path / "m.pth")
    assert _run(tmp_path, weights, data) == 0
    result = _result(tmp_path)
    model, _ = load_trained(str(weights))  # the plain path: features of extract, torchreid's protocol
    feats = {}
    for split in ("query", "bounding_box_test"):
        paths = sorted(str(p) for p in (data / split).glob("*.jpg"))
        feats[split] = (torch.from_numpy(extract_features(model, paths, 64, 32, [0.5] * 3, [0.5] * 3)[0]),
                        np.array([int(Path(p).name[:4]) for p in paths]),
                        np.array([int(Path(p).name[6]) for p in paths]))
    (qf, qp, qc), (gf, gp, gc) = feats["query"], feats["bounding_box_test"]
    cmc, mAP = evaluate_rank(query_gallery_distances(qf, gf, "euclidean", True), qp, gp, qc, gc)
    assert result["clean"] == {"rank1": float(cmc[0]), "mAP": float(mAP)}
    zero = [p for p in result["points"] if p["area"] == 0]
    assert len(zero) == 4 and all((p["rank1"], p["mAP"]) == (cmc[0], mAP) for p in zero)
    assert len(result["points"]) == 2 * 2 * 3 and result["donors"] == "bounding_box_train"
    assert {(s["kind"], s["position"]) for s in result["summary"]} == {(k, p) for k in ("person", "erase")
                                                                       for p in ("bottom", "side")}
    out = capsys.readouterr().out
    assert "** Results **" in out and "| kind | position |" in out
    assert (tmp_path / "out" / "curves.png").is_file() and (tmp_path / "out" / "robustness.md").is_file()


def test_boxes_are_exact_and_the_same_seed_gives_the_same_pixels(tmp_path):
    data = write_market(tmp_path / "market")
    weights = plugin_checkpoint(tmp_path / "m.pth")
    assert _run(tmp_path, weights, data, "--seed", "3", "--save-images") == 0
    boxes = json.loads((tmp_path / "out" / "erase_bottom_30" / "occlusion.json").read_text())["queries"]
    assert len(boxes) == 4 and {tuple(b["box_xyxy"]) for b in boxes.values()} == {(0, 34, 24, 48)}  # 14.4 rows -> 14
    side = json.loads((tmp_path / "out" / "person_side_60" / "occlusion.json").read_text())["queries"]
    assert {tuple(b["box_xyxy"]) for b in side.values()} <= {(0, 0, 14, 48), (10, 0, 24, 48)}
    first = {p: p.read_bytes() for p in sorted((tmp_path / "out").rglob("*.png")) if "curves" not in p.name}
    first_json = {k: v for k, v in _result(tmp_path).items() if k != "wall_s"}
    assert _run(tmp_path, weights, data, "--seed", "3", "--save-images") == 0
    assert first == {p: p.read_bytes() for p in first} and len(first) == 12 * 4
    assert {k: v for k, v in _result(tmp_path).items() if k != "wall_s"} == first_json
    assert _run(tmp_path, weights, data, "--seed", "4", "--save-images") == 0
    assert any(first[p] != p.read_bytes() for p in first if "person_side" in str(p))


def test_analyze_gates_reads_a_point_folder(tmp_path, capsys):
    data = write_market(tmp_path / "market")
    weights = plugin_checkpoint(tmp_path / "m.pth")
    assert _run(tmp_path, weights, data, "--save-images") == 0
    point = tmp_path / "out" / "erase_bottom_60"
    assert main(["analyze-gates", "--weights", str(weights), "--dataset", "market_layout", "--root", "",
                 "--set", "data.market_layout.folder", str(point), "--out", str(tmp_path / "gates")]) == 0
    gates = json.loads((tmp_path / "gates" / "gates.json").read_text())
    assert gates["kinds"] == ["erase"] * 4
    assert np.array(gates["fractions"]).mean() > 0.4  # the bottom 60% of the image: mostly covered groups


@pytest.mark.parametrize("stored_config", [False, True])  # torchreid's engine / lfem-reid train (config inside)
def test_a_torchreid_model(tmp_path, stored_config):
    data = write_market(tmp_path / "market", size=(80, 40))
    model = _torchreid.root().models.build_model("osnet_x0_25", num_classes=9, loss="softmax", pretrained=False)
    state = {"state_dict": model.state_dict(), "epoch": 3}
    size = ["data.height", "64", "data.width", "32"]
    if stored_config:
        state["config"] = load_config(None, ["model.name", "osnet_x0_25", "loss.name", "softmax", *size]).dump()
    torch.save(state, tmp_path / "osnet.pth")
    flags = [] if stored_config else ["--model", "osnet_x0_25", "--set", *size[:2], "--set", *size[2:]]
    assert _run(tmp_path, tmp_path / "osnet.pth", data, *flags) == 0
    result = _result(tmp_path)
    assert result["model"] == "osnet_x0_25" and result["image_size_hw"] == [64, 32]
    assert all(0 <= p["mAP"] <= 1 for p in result["points"])


def test_a_plugin_model_trained_on_other_data_without_a_training_split(tmp_path, caplog):
    data = write_market(tmp_path / "market", ids=(7, 8, 9, 10, 11), size=(128, 64))
    for p in (data / "bounding_box_train").iterdir():
        p.unlink()
    (data / "bounding_box_train").rmdir()
    weights = plugin_checkpoint(tmp_path / "m.pth", name="vit_transreid_tiny", num_classes=3)
    assert _run(tmp_path, weights, data) == 0
    result = _result(tmp_path)
    assert result["donors"] == "query (other identities)" and result["queries"] == 5
    assert "no bounding_box_train/" in caplog.text


@pytest.mark.parametrize("change,message", [
    (["--areas", "0", "1.0"], "in [0, 1)"), (["--kinds", "fog"], "choose among"),
    (["--positions", "middle"], "choose among"), (["--data", "nowhere"], "does not exist"),
])
def test_bad_inputs_are_refused_before_any_work(tmp_path, capsys, change, message):
    data = write_market(tmp_path / "market")
    weights = plugin_checkpoint(tmp_path / "m.pth")
    args = ["robustness", "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "out")] + change
    assert main(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out" / "robustness.json").exists()


def test_missing_query_folder_and_a_file_that_is_no_checkpoint(tmp_path, capsys):
    data = write_market(tmp_path / "market")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    assert main(["robustness", "--weights", str(tmp_path / "junk.pth"), "--data", str(data)]) == 2
    assert "refusing to load" in capsys.readouterr().err
    weights = plugin_checkpoint(tmp_path / "m.pth")
    assert main(["robustness", "--weights", str(weights), "--data", str(data), "--query", "q2"]) == 2
    assert "has no q2/ (query)" in capsys.readouterr().err


def test_relative_auc_on_hand_made_curves():
    assert relative_auc([0, 0.5], [0.8, 0.8], 0.8) == pytest.approx(1.0)
    assert relative_auc([0, 0.3, 0.6], [0.8, 0.4, 0.0], 0.8) == pytest.approx(0.5)
    assert relative_auc([0.2, 0.4], [0.5, 0.5], 1.0) == pytest.approx((0.75 * 0.2 + 0.5 * 0.2) / 0.4)
    assert np.isnan(relative_auc([0, 0.5], [0, 0], 0.0))
