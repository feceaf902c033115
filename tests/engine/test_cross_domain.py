"""The cross-domain protocol end to end on generated images: the shipped Market-1501 config trains the tiny model on
a fake Market-1501 and evaluates Market-1501, Occluded-REID, Partial-REID and Partial-iLIDS in the same run; SIE
per target (cameras for the source, the mean row elsewhere); the comparison report gets one table per target."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfem_plugin import config as C
from lfem_plugin.tools import compare, train as T
from lfem_plugin.tools.compare import ModelSpec, Profile
from lfem_plugin.models.sie import UNKNOWN_CAMERA, CameraEmbedding
from lfem_plugin.tools.preflight import PreflightError

from ..helpers import occluded_reid_tree, partial_ilids_tree, partial_reid_tree

REPO = Path(__file__).resolve().parents[2]
MARKET = REPO / "configs" / "market1501" / "lfem_vit_base_s11_256x128.yaml"
TARGETS = ["market1501", "occluded_reid", "partial_reid", "partial_ilids"]
TINY = ["model.name", "lfem_vit_tiny", "model.pretrained", "False", "data.height", "64", "data.width", "32",
        "lfem.stride", "8", "train.batch_size", "8", "sampler.num_instances", "2", "test.batch_size", "16",
        "train.max_epoch", "1", "test.eval_freq", "-1", "data.workers", "0", "use_gpu", "False"]


def market_tree(root: Path) -> Path:
    """torchreid's Market-1501 layout: 6 training ids on cameras 1-3, 4 test ids (query camera 1, gallery 2-3)."""
    rng = np.random.default_rng(0)
    base = root / "market1501" / "Market-1501-v15.09.15"
    for split, ids, cams in (("bounding_box_train", range(1, 7), (1, 2, 3, 1)), ("query", range(100, 104), (1,)),
                             ("bounding_box_test", range(100, 104), (2, 3, 2))):
        (base / split).mkdir(parents=True, exist_ok=True)
        for pid in ids:
            colour = rng.integers(0, 255, size=(4, 2, 3))
            for i, cam in enumerate(cams):
                img = np.kron(colour, np.ones((8, 8, 1))) + rng.normal(0, 20, (32, 16, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                    base / split / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg")
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cross_domain_data")
    market_tree(root)
    occluded_reid_tree(root, ids=4, per_id=2)
    partial_reid_tree(root, ids=4, per_id=2)
    partial_ilids_tree(root, ids=4)
    return root


def test_target_sie_modes():
    cfg = C.load_config(MARKET)
    assert list(cfg.data.targets) == TARGETS and list(cfg.data.sources) == ["market1501"]
    assert C.target_sie(cfg) == {"market1501": "cameras", "occluded_reid": "mean", "partial_reid": "mean",
                                 "partial_ilids": "mean"}
    off = C.load_config(MARKET, ["test.cross_domain_sie", "off"])
    assert set(C.target_sie(off).values()) == {"cameras", "off"}
    assert set(C.target_sie(C.load_config(MARKET, ["test.use_cameras", "False"])).values()) == {"off"}


def test_unknown_camera_is_the_mean_row():
    sie = CameraEmbedding(3, 4, coef=3.0, camera_ids=[0, 2, 5]).eval()  # evaluation checks the cameras
    out = sie(torch.tensor([2, UNKNOWN_CAMERA, 5]))
    assert torch.allclose(out[0, 0], 3.0 * sie.table[1, 0])
    assert torch.allclose(out[1, 0], 3.0 * sie.table[:, 0].mean(0), atol=1e-7)
    with pytest.raises(ValueError, match="camera id 4 is outside .* test.cross_domain_sie mean"):
        sie(torch.tensor([4]))
    with pytest.raises(ValueError, match="reserved"):
        CameraEmbedding(2, 4, camera_ids=[UNKNOWN_CAMERA, 0])


@pytest.mark.parametrize("opts, message", [
    (["data.sources", "['partial_reid']"], "data.sources lists partial_reid, a test-only benchmark"),
])
def test_preflight_rejects(opts, message):
    with pytest.raises(PreflightError, match=message):
        T.run(C.load_config(MARKET, TINY + opts))


def test_an_unknown_sie_mode_fails_when_the_config_loads_naming_where_it_was_set():
    with pytest.raises(ValueError, match=re.escape("test.cross_domain_sie 'guess' (in the KEY VALUE overrides) is "
                                                   "not one of")):
        C.load_config(MARKET, TINY + ["test.cross_domain_sie", "guess"])
    cfg = C.get_default_config()  # a config built without load_config: the preflight still checks it
    cfg.test.cross_domain_sie = "guess"
    with pytest.raises(PreflightError, match="test.cross_domain_sie 'guess' is not one of"):
        T.preflight.check_config(cfg)


def test_market_trained_run_evaluates_every_target(data_root, tmp_path, capsys):
    cfg = C.load_config(MARKET, TINY + ["data.root", str(data_root), "data.save_dir", str(tmp_path / "run")])
    engine = T.run(cfg)
    assert list(engine.last_results) == TARGETS
    assert [engine.last_results[t]["sie"] for t in TARGETS] == ["cameras", "mean", "mean", "mean"]
    assert all(0 <= r["mAP"] <= 1 for r in engine.last_results.values())
    assert capsys.readouterr().out.count("** Results **") == 4
    # mean vs off changes the cross-domain features, and a mean-SIE feature is the model's output for camera -1
    loader = engine.test_loader["partial_reid"]["query"]
    mean, _, _ = engine._extract(loader, "mean")
    off, _, _ = engine._extract(loader, "off")
    assert not torch.allclose(mean, off)
    images = next(iter(loader))["img"]
    model = engine.model.eval()
    with torch.no_grad():
        direct = model(images, camera=torch.full((len(images),), UNKNOWN_CAMERA))
    assert torch.allclose(mean[:len(images)], direct, atol=1e-6)


@pytest.mark.slow
def test_compare_report_has_one_table_per_target(data_root, tmp_path, monkeypatch):
    spec = ModelSpec("full", "Full (LFEM)", "market1501/lfem_vit_base_s11_256x128.yaml")
    profile = Profile("market", "tiny cross-domain", {}, (spec,))
    monkeypatch.setitem(compare.PROFILES, "market", profile)
    result = compare.run_compare("market", seeds=[0], out_dir=tmp_path, root=str(data_root), extra=TINY)[0]
    assert result["status"] == "ok", result.get("traceback")
    stored = json.loads((tmp_path / "full_seed0.json").read_text())
    assert list(stored["targets"]) == TARGETS and stored["R1"] == stored["targets"]["market1501"]["R1"]
    table = compare.report(tmp_path).read_text()
    for target in TARGETS:
        assert f"### {target}" in table
    assert table.count("| Full (LFEM) |") == 4 and table.count("1 epochs, SIE mean |") == 3
    for plot in ("cmc.png", "bars.png", "cmc_occluded_reid.png", "bars_partial_ilids.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == TARGETS


def test_the_getting_started_command_trains_on_market_and_reports_every_target(data_root, tmp_path, capsys):
    """docs/GETTING_STARTED.md's `lfem-reid train --config-file configs/market1501/lfem_vit_base_s11_256x128.yaml`."""
    from lfem_plugin.cli import main
    assert main(["train", "--config-file", str(MARKET), "--root", str(data_root), "data.save_dir",
                 str(tmp_path / "cli"), *TINY]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert list(summary) == TARGETS and out.count("** Results **") == 4


def test_camera_argument_per_mode():
    from lfem_plugin.models.sie import camera_argument
    ids = torch.tensor([0, 1, 1])
    assert camera_argument(ids, "cameras") is ids and camera_argument(ids, "off") is None
    assert camera_argument(ids, "mean").tolist() == [UNKNOWN_CAMERA] * 3
    assert camera_argument([3, 4], "mean") == [UNKNOWN_CAMERA] * 2
    with pytest.raises(ValueError, match="'guess' is not one of"):
        camera_argument(ids, "guess")


# ---- torchreid's own datasets: an incomplete copy or a failed download is an error naming the layout ------------
def _market_cfg(root: Path, tmp_path: Path, config: Path = MARKET):
    return C.load_config(config, TINY + ["data.root", str(root), "data.save_dir", str(tmp_path / "run")])


def test_incomplete_market_names_the_layout_before_torchreid_runs(tmp_path):
    (tmp_path / "data" / "market1501" / "query").mkdir(parents=True)
    with pytest.raises(PreflightError, match=r"torchreid reads market1501/Market-1501-v15.09.15/\{bounding_box_train, "
                                             r"query, bounding_box_test\} .* holds \['query'\]; unpack the dataset"):
        T.run(_market_cfg(tmp_path / "data", tmp_path))


def test_failed_download_names_the_layout_and_leaves_no_empty_folder(tmp_path, monkeypatch):
    from lfem_plugin import _torchreid

    def offline(self, dataset_dir, dataset_url):  # what torchreid does offline: create the folder, then fail
        Path(dataset_dir).mkdir(parents=True, exist_ok=True)
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(_torchreid.root().data.datasets.dataset.Dataset, "download_dataset", offline)
    with pytest.raises(PreflightError, match=r"name resolution>: torchreid could not download it \(Market-1501 "
                                             r"\(market1501\): torchreid reads market1501/"):
        T.run(_market_cfg(tmp_path / "data", tmp_path))
    assert not (tmp_path / "data" / "market1501").exists()  # the next run tries the download again


def test_msmt17_that_torchreid_cannot_download(tmp_path):
    cfg = _market_cfg(tmp_path / "data", tmp_path, REPO / "configs" / "msmt17" / "lfem_vit_base_s11_256x128.yaml")
    with pytest.raises(PreflightError, match=r"manually prepared.*MSMT17 \(msmt17\): torchreid reads msmt17/MSMT17_V1"):
        T.run(cfg)


def test_an_error_after_a_dataset_arrived_is_not_blamed_on_the_download(data_root):
    from lfem_plugin.tools.preflight import download_failed
    assert download_failed(str(data_root), ["market1501"], OSError("something else")) is None


def test_rerank_that_cannot_fit_is_refused_before_training():
    from lfem_plugin.tools.preflight import check_rerank_memory
    check_rerank_memory("occluded_duke", 2210, 17661, memory=24 * 2**30)  # 1.4 GB: fits
    with pytest.raises(PreflightError, match=r"msmt17: test.rerank needs at least 29.2 GB .* 24.0 GB; set "
                                             r"test.rerank False"):
        check_rerank_memory("msmt17", 11659, 82161, memory=24 * 2**30)
