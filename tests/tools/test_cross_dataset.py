"""Issue 38 case 1: a checkpoint is evaluated on other data from the checkpoint alone - a test-only Market-layout
folder with cameras the model never saw, at another image size - and ``test``'s score is the score of ``extract``'s
features of the same images (issue 35 item 4: the checkpoint carries its model)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfem_plugin import config as C
from lfem_plugin.cli import main
from lfem_plugin.engine.evaluation import query_gallery_distances
from lfem_plugin.metrics import evaluate_rank
from lfem_plugin.tools import train as T
from lfem_plugin.utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml"


def write_folder(base: Path, splits, size, cams, seed) -> Path:
    """A Market-layout folder: split -> (identities, images per identity); cameras cycle through ``cams``."""
    rng = np.random.default_rng(seed)
    for split, (ids, per_id) in splits.items():
        (base / split).mkdir(parents=True)
        for pid in ids:
            colour = rng.integers(0, 255, size=(4, 2, 3))
            for i in range(per_id):
                cam = cams[split][i % len(cams[split])]
                pixels = np.kron(colour, np.ones((size[0] // 4, size[1] // 2, 1))) + rng.normal(0, 25, (*size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    base / split / f"{pid:04d}_c{cam}_{i:04d}.jpg")
    return base


@pytest.fixture(scope="module")
def trained_on_a(tmp_path_factory):
    base = tmp_path_factory.mktemp("cross")
    write_folder(base / "a", {"bounding_box_train": (range(1, 7), 4), "query": (range(50, 53), 1),
                              "bounding_box_test": (range(50, 53), 2)}, (64, 32),
                 {"bounding_box_train": (1, 2), "query": (1,), "bounding_box_test": (2,)}, 0)
    # B: test only (no bounding_box_train/), cameras 3 and 5 (never seen), 40x20 images, other identities
    write_folder(base / "b", {"query": (range(70, 75), 1), "bounding_box_test": (range(70, 75), 3)}, (40, 20),
                 {"query": (3,), "bounding_box_test": (5,)}, 1)
    T.run(C.load_config(CPU_CONFIG, [
        "data.root", str(base), "data.sources", "['market_layout']", "data.targets", "['market_layout']",
        "data.market_layout.folder", "a", "data.save_dir", str(base / "run"), "train.max_epoch", "1",
        "train.batch_size", "8", "sampler.num_instances", "2", "test.batch_size", "8", "use_gpu", "False",
        "test.eval_freq", "-1", "train.checkpoint_period", "1"]))
    return base, base / "run" / "model" / "model.pth.tar-1"


def _test(ckpt, base, *extra):
    return ["test", "--weights", str(ckpt), "-t", "market_layout", "data.market_layout.folder", str(base / "b"),
            "data.save_dir", str(base / "t"), *extra]


def test_the_checkpoint_carries_every_builder_argument(trained_on_a):
    _, ckpt = trained_on_a
    spec = load_checkpoint(ckpt)["model_build"]
    assert spec["name"] == "lfem_vit_tiny" and spec["kwargs"]["num_classes"] == 6
    assert spec["kwargs"]["camera_ids"] == [0, 1] and tuple(spec["kwargs"]["img_size"]) == (64, 32)


def test_test_on_a_test_only_folder_equals_the_score_of_extracts_features(trained_on_a, capsys):
    base, ckpt = trained_on_a
    assert main(_test(ckpt, base)) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["market_layout"]
    feats = {}
    for split in ("query", "bounding_box_test"):  # extract with the mean SIE row, as the docs say test uses
        out = base / f"{split}.npy"
        assert main(["extract", "--weights", str(ckpt), "--images", str(base / "b" / split), "--cameras", "mean",
                     "--device", "cpu", "--out", str(out)]) == 0
        names = [Path(p).name for p in out.with_suffix(".paths.txt").read_text().split()]
        feats[split] = (torch.from_numpy(np.load(out)), np.array([int(n[:4]) for n in names]),
                        np.array([int(n.split("_c")[1][0]) for n in names]))
    (qf, qp, qc), (gf, gp, gc) = feats["query"], feats["bounding_box_test"]
    cfg = C.load_config(None, (), text=load_checkpoint(ckpt)["config"])
    distmat = query_gallery_distances(qf, gf, cfg.test.dist_metric, cfg.test.normalize_feature)
    cmc, mAP = evaluate_rank(distmat, qp, gp, qc, gc)
    assert scores == {"mAP": round(float(mAP), 4), "rank1": round(float(cmc[0]), 4)}


def test_the_camera_setting_reaches_the_unseen_cameras(trained_on_a, capsys):
    from lfem_plugin.tools.checkpoint_test import evaluate_checkpoint
    base, ckpt = trained_on_a
    text = load_checkpoint(ckpt)["config"]
    for mode in ("mean", "off"):  # mean: the default
        opts = ["data.root", str(base), "data.targets", "['market_layout']", "data.market_layout.folder", "b"]
        cfg = C.load_config(None, opts + (["test.cross_domain_sie", mode] if mode != "mean" else []), text=text)
        assert evaluate_checkpoint(cfg, str(ckpt), []).results["market_layout"]["sie"] == mode
    capsys.readouterr()
    assert main(_test(ckpt, base, "test.cross_domain_sie", "cameras")) == 2  # cameras 3, 5 have no SIE row
    assert "camera id 2 is outside the SIE table of 2 training cameras (ids [0, 1])" in capsys.readouterr().err


def test_the_training_folder_is_scored_with_its_own_cameras(trained_on_a, capsys):
    base, ckpt = trained_on_a
    assert main(["test", "--weights", str(ckpt), "data.save_dir", str(base / "t2")]) == 0
    from lfem_plugin.tools.checkpoint_test import trained_on
    cfg = C.load_config(None, (), text=load_checkpoint(ckpt)["config"])
    other = C.load_config(None, ["data.market_layout.folder", "b"], text=load_checkpoint(ckpt)["config"])
    assert trained_on(cfg, cfg, "market_layout") and not trained_on(other, cfg, "market_layout")


def test_a_checkpoint_without_model_build_loads_as_before(trained_on_a, tmp_path):
    from lfem_plugin.tools.inference import load_trained
    _, ckpt = trained_on_a
    state = load_checkpoint(ckpt)
    del state["model_build"]  # as written before issue 35 item 4
    torch.save(state, tmp_path / "old.pth")
    x = torch.rand(2, 3, 64, 32)
    new, old = load_trained(str(ckpt))[0], load_trained(str(tmp_path / "old.pth"))[0]
    assert torch.equal(new(x, camera=torch.tensor([0, 1])), old(x, camera=torch.tensor([0, 1])))
    concat = load_trained(str(ckpt), opts=["lfem.eval_feature", "concat"])[0]  # an override still changes the build
    assert concat(x).shape[1] > new(x).shape[1]


def test_every_command_that_takes_the_checkpoint_runs_on_the_test_only_folder(trained_on_a, tmp_path):
    base, ckpt = trained_on_a
    b = base / "b"
    model = ["--weights", str(ckpt)]
    assert main(["search", *model, "--query", str(b / "query"), "--gallery", str(b / "bounding_box_test"),
                 "--cameras", "mean", "--device", "cpu", "--out", str(tmp_path / "s")]) == 0
    assert main(["visualize", *model, "--images", str(b / "query"), "--cameras", "mean", "--out",
                 str(tmp_path / "v")]) == 0
    assert len(list((tmp_path / "v").glob("*_lfem.png"))) == 5
