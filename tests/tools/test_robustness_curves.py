"""`lfem-reid robustness` on generated Market-layout folders: exact bands, occluders only inside them, determinism
under a seed, area 0 equal to the plain evaluation, a torchreid model, a checkpoint trained on other data, boxes that
analyze-gates reads, and bad inputs refused before any work."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfem_plugin.cli import main
from lfem_plugin.config import load_config
from lfem_plugin.data.occlusion import find_occlusion_file, read_occlusion_file
from lfem_plugin.data.synthetic_occluders import band_box, draw_occluder
from lfem_plugin.metrics.distance import compute_distance_matrix
from lfem_plugin.metrics.rank import evaluate_rank
from lfem_plugin.registry import MODELS
from lfem_plugin.tools.inference import extract_features
from lfem_plugin.tools.robustness import Sweep, curve_summary, load_any, occlude_queries, read_test_folder, run_sweep

from ..helpers import TR


def _folder(base: Path, ids=range(100, 106), size=(48, 24), seed=0) -> Path:
    """query/ (camera 1) and bounding_box_test/ (camera 2, 2 per id) of identity-coloured noisy images."""
    rng = np.random.default_rng(seed)
    for split, per_id, cam in (("query", 1, 1), ("bounding_box_test", 2, 2)):
        (base / split).mkdir(parents=True, exist_ok=True)
        for pid in ids:
            colour = rng.integers(0, 255, size=(4, 2, 3))
            for i in range(per_id):
                img = np.kron(colour, np.ones((size[0] // 4, size[1] // 2, 1))) + rng.normal(0, 15, (*size, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(base / split / f"{pid:04d}_c{cam}_{i}.jpg")
    return base


def _checkpoint(path: Path, name="lfem_vit_tiny", num_classes=7, **opts) -> Path:
    """A plugin checkpoint as the engine writes it (weights, stored config, data-given sizes), of a model trained
    elsewhere: `num_classes` identities, two cameras."""
    cfg = load_config(None, ["model.name", name, "data.height", "64", "data.width", "32", "lfem.stride", "8",
                             *[str(v) for kv in opts.items() for v in kv]])
    model = MODELS.get(name)(num_classes=num_classes, loss="triplet", img_size=(64, 32), stride=8, num_cameras=2,
                             camera_ids=[0, 1])
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": cfg.dump(),
                "model_args": model.build_args()._asdict()}, path)
    return path


def test_bands_cover_exactly_the_area_at_their_position():
    rng = np.random.default_rng(0)
    assert band_box(64, 32, 0.25, "bottom", rng) == (0, 48, 32, 64)
    assert band_box(64, 32, 0.25, "top", rng) == (0, 0, 32, 16)
    sides = {band_box(64, 32, 0.25, "side", np.random.default_rng(s)) for s in range(20)}
    assert sides == {(0, 0, 8, 64), (24, 0, 32, 64)}  # left or right, 8 of 32 columns
    assert band_box(64, 32, 0.0, "bottom", rng) == (0, 64, 32, 64)  # nothing
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
            band_box(64, 32, bad, "bottom", rng)
    with pytest.raises(ValueError, match="position 'middle'"):
        band_box(64, 32, 0.2, "middle", rng)


@pytest.mark.parametrize("kind", ["scene", "person", "noise", "erase"])
def test_an_occluder_changes_only_its_box(kind):
    image = np.full((40, 20, 3), 200, dtype=np.uint8)
    donor = np.random.default_rng(1).integers(0, 100, size=(60, 30, 3), dtype=np.uint8)
    out = draw_occluder(image, donor, (0, 30, 20, 40), kind, np.random.default_rng(2))
    assert np.array_equal(out[:30], image[:30]) and not np.array_equal(out[30:], image[30:])
    assert np.array_equal(out, draw_occluder(image, donor, (0, 30, 20, 40), kind, np.random.default_rng(2)))
    if kind == "erase":
        assert (out[30:] == np.array([124, 116, 104], dtype=np.uint8)).all()
    if kind in ("scene", "person"):
        assert out[30:].max() < 100  # the donor's pixels


def test_the_draws_are_deterministic_under_a_seed_and_the_same_boxes_for_every_kind():
    images = [np.full((40, 20, 3), v, dtype=np.uint8) for v in (10, 20, 30)]
    pids = np.array([1, 2, 3])
    one = occlude_queries(images, pids, images, pids, "noise", "side", 0.3, 3, seed=7)
    again = occlude_queries(images, pids, images, pids, "noise", "side", 0.3, 3, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(one[0], again[0])) and one[1] == again[1]
    other = occlude_queries(images, pids, images, pids, "noise", "side", 0.3, 3, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(one[0], other[0]))
    assert occlude_queries(images, pids, images, pids, "person", "side", 0.3, 3, seed=7)[1] == one[1]
    for out, pid in zip(occlude_queries(images, pids, images, pids, "person", "bottom", 0.5, 5, seed=7)[0], pids):
        assert not (out[20:] == 10 * pid).all()  # a donor of another identity


def test_area_zero_is_the_plain_evaluation_and_the_curve_falls(tmp_path):
    folder = _folder(tmp_path / "test")
    model, cfg = load_any(str(_checkpoint(tmp_path / "m.pth")))
    result = run_sweep(model, cfg, folder, Sweep(("erase",), ("bottom",), (0.0, 0.3, 0.6)), sie="off",
                       progress=False)
    query, gallery = read_test_folder(folder)
    qf, _ = extract_features(model, [q[0] for q in query], 64, 32, [0.5] * 3, [0.5] * 3)
    gf, _ = extract_features(model, [g[0] for g in gallery], 64, 32, [0.5] * 3, [0.5] * 3)
    dist = compute_distance_matrix(torch.from_numpy(qf), torch.from_numpy(gf), cfg.test.dist_metric)
    cmc, mean_ap = evaluate_rank(dist.numpy(), np.array([q[1] for q in query]), np.array([g[1] for g in gallery]),
                                 np.array([q[2] for q in query]), np.array([g[2] for g in gallery]))
    assert result["clean"]["mAP"] == round(100 * float(mean_ap), 2) and result["clean"]["R1"] == round(
        100 * float(cmc[0]), 2)
    curve = result["curves"][0]
    assert curve["areas"] == [0.0, 0.3, 0.6] and curve["mAP"][0] == result["clean"]["mAP"]
    assert curve["mAP_auc_rel"] == curve_summary(curve["areas"], curve["mAP"])
    assert curve_summary([0, 0.5], [40.0, 20.0]) == 0.75 and curve_summary([0, 0.5], [0.0, 0.0]) is None


def test_a_torchreid_model_and_a_checkpoint_trained_on_other_data(tmp_path):
    folder = _folder(tmp_path / "other", ids=range(3, 9), size=(40, 20))  # other people, another image size
    osnet = TR.models.build_model("osnet_x0_25", num_classes=5, loss="softmax", pretrained=False)
    torch.save({"state_dict": osnet.state_dict(), "epoch": 3}, tmp_path / "osnet.pth")
    with pytest.raises(ValueError, match="--model NAME"):
        load_any(str(tmp_path / "osnet.pth"))
    model, cfg = load_any(str(tmp_path / "osnet.pth"), "osnet_x0_25")
    result = run_sweep(model, cfg, folder, Sweep(("noise",), ("top",), (0.0, 0.4)), progress=False)
    assert result["sie"] == "off" and 0 <= result["points"][0]["mAP"] <= 100
    vit, vcfg = load_any(str(_checkpoint(tmp_path / "vit.pth", num_classes=11)))
    assert run_sweep(vit, vcfg, folder, Sweep(("scene",), ("side",), (0.0, 0.2)), progress=False)["sie"] == "mean"


def test_the_cli_writes_json_table_plot_and_boxes_analyze_gates_reads(tmp_path, capsys):
    folder = _folder(tmp_path / "test")
    ckpt = _checkpoint(tmp_path / "m.pth")
    out = tmp_path / "out"
    assert main(["robustness", "--weights", str(ckpt), "--folder", str(folder), "--kinds", "person", "erase",
                 "--positions", "bottom", "--areas", "0", "0.5", "--save-queries", "--out", str(out)]) == 0
    result = json.loads((out / "robustness.json").read_text())
    assert [(c["kind"], c["position"]) for c in result["curves"]] == [("person", "bottom"), ("erase", "bottom")]
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "| person |" in (out / "robustness.md").read_text()
    point = out / "points" / "person_bottom_50"
    queries = sorted(str(p) for p in (point / "query_occluded").iterdir())
    boxes = read_occlusion_file(find_occlusion_file(queries))
    assert len(boxes) == 6 and {b.box_xyxy for b in boxes.values()} == {(0, 24, 24, 48)}
    assert main(["analyze-gates", "--weights", str(ckpt), "--dataset", "market_layout_occluded", "--set",
                 "data.market_layout.folder", str(point), "--out", str(tmp_path / "gates")]) == 0
    assert "Spearman" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--folder", "nowhere"], "test folder nowhere does not exist"),
    (["--areas", "0", "1.0"], "areas [0.0, 1.0]"),
    (["--areas", "0.1", "0.2"], "starting at 0"),
    (["--kinds", "smoke"], "occluder kinds ['smoke']"),
    (["--positions", "middle"], "occluder positions ['middle']"),
    (["--batch-size", "0"], "--batch-size is 0"),
])
def test_bad_inputs_are_refused_before_any_work(tmp_path, capsys, args, message):
    folder = _folder(tmp_path / "test")
    ckpt = _checkpoint(tmp_path / "m.pth")
    base = {"--weights": str(ckpt), "--folder": str(folder)}
    for flag, value in zip(args[0::2], args[1::2]):
        base.pop(flag, None)
    argv = ["robustness", *[v for kv in base.items() for v in kv], *args, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfem-reid robustness: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "robustness.json").exists()
