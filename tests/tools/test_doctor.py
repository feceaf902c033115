"""``lfem-reid doctor``: synthetic data shaped like the config's, the report's fields, and the projections."""
import json
import os
from pathlib import Path

import pytest

from lfem_plugin import config as C
from lfem_plugin.cli import main
from lfem_plugin.data.datasets import OccludedDuke
from lfem_plugin.tools.doctor import _num_evaluations
from lfem_plugin.tools.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml"
FIELDS = {"device", "amp", "batch_images", "iter_s", "data_s", "images_per_s", "peak_mem_mb", "iters_per_epoch",
          "projected_epoch_s", "projected_total_h", "eval_images_per_s", "eval_first_batch_s", "loss_first",
          "loss_last", "grads_finite", "gate_mean", "warnings", "fixed_batch_loss_falls", "amp_loss_rel_diff",
          "amp_grad_cosine", "train_gflops_per_image", "eval_gflops_per_image", "train_tflops", "eval_tflops",
          "train_peak_fraction", "eval_peak_fraction"}


def test_synthetic_occluded_duke_has_the_real_shape(tmp_path):
    base = write_synthetic("occluded_duke", tmp_path)
    ds = OccludedDuke(root=str(tmp_path), verbose=False)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (15618, 2210, 17661)
    assert (ds.num_train_pids, ds.num_train_cams) == (702, 8)
    assert len({q[1] for q in ds.query}) == 519 and len({g[1] for g in ds.gallery}) == 1110
    assert {q[1] for q in ds.query} <= {g[1] for g in ds.gallery}
    inodes = {os.stat(p).st_ino for p in (base / "query").iterdir()}
    assert len(inodes) <= 8  # hard links to a few generated images
    with pytest.raises(KeyError, match="no synthetic shape for dataset 'cuhk03'"):
        write_synthetic("cuhk03", tmp_path / "other")


@pytest.mark.parametrize("name, splits", [
    ("market1501", {"train": (12936, 751, 6), "query": (3368, 750, 6), "gallery": (15913, 751, 6)}),
    ("dukemtmcreid", {"train": (16522, 702, 8), "query": (2228, 702, 8), "gallery": (17661, 1110, 8)}),
    ("msmt17", {"train": (32621, 1041, 15), "query": (11659, 3060, 15), "gallery": (82161, 3060, 15)}),
    ("p_dukemtmc_reid", {"train": (12927, 665, 2), "query": (2163, 634, 1), "gallery": (9053, 634, 1)}),
    ("occluded_reid", {"query": (1000, 200, 1), "gallery": (1000, 200, 1)}),
    ("partial_reid", {"query": (300, 60, 1), "gallery": (300, 60, 1)}),
    ("partial_ilids", {"query": (119, 119, 1), "gallery": (119, 119, 1)}),
])
def test_synthetic_benchmarks_load_with_their_shape(tmp_path, name, splits):
    """Each benchmark's synthetic copy is read by its own loader (torchreid's for Market-1501, DukeMTMC-reID and
    MSMT17) with the benchmark's image, identity and camera counts."""
    from lfem_plugin import _torchreid
    load = _torchreid.root().data.datasets.init_image_dataset
    write_synthetic(name, tmp_path)
    for split, counts in splits.items():
        data = load(name, root=str(tmp_path), mode=split, verbose=False).data
        assert (len(data), len({d[1] for d in data}), len({d[2] for d in data})) == counts


def test_number_of_scheduled_evaluations():
    cfg = C.load_config(REPO / "configs" / "occluded_duke" / "lfem_vit_base_s11_256x128.yaml")
    assert _num_evaluations(cfg) == 10  # epochs 20, 40, ..., 180, then the final one at 200
    assert _num_evaluations(C.load_config(None, ["test.eval_freq", "-1"])) == 1


def test_doctor_cli_on_the_tiny_model_with_synthetic_duke(tmp_path, capsys):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--config-file", str(CPU_CONFIG), "--synthetic", "--iters", "2", "--eval-images", "16",
                 "--amp-check", "--out", str(out), "data.sources", "['occluded_duke']", "data.targets",
                 "['occluded_duke']", "data.save_dir", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert FIELDS <= set(report)
    assert report["batch_images"] == 32 * 3 and report["iters_per_epoch"] > 100
    assert report["images_per_s"] == pytest.approx(96 / report["iter_s"])
    expected_h = (40 * report["projected_epoch_s"] + 2 * report["eval_total_images"] / report["eval_images_per_s"])
    assert report["projected_total_h"] == pytest.approx(expected_h / 3600)
    assert report["grads_finite"] and report["fixed_batch_loss_falls"] and len(report["gate_mean"]) == 4
    assert report["amp_grad_cosine"] > 0.99
    assert "images/s" in printed and "whole run (40 epochs + 2 evaluations)" in printed
    assert report["train_gflops_per_image"] > 2.5 * report["eval_gflops_per_image"] > 0  # forward + backward
    assert report["train_tflops"] == pytest.approx(report["train_gflops_per_image"] * report["images_per_s"] / 1e3)
    assert report["train_peak_fraction"] is None and "device not in lfem_plugin.utils.flops.PEAKS" in printed  # CPU
    assert not (tmp_path / "run").exists()  # the user's run folder is never touched




@pytest.mark.slow
def test_doctor_full_size_paper_config_builds_on_cpu_with_a_small_batch(tmp_path, monkeypatch):
    """The paper config (ViT-B/16, stride 11, 256x128, 3 views) is measured end to end; one iteration only."""
    from lfem_plugin.tools import doctor
    out = tmp_path / "doctor.json"
    args = ["doctor", "--config-file", str(REPO / "configs" / "occluded_duke" / "lfem_vit_base_s11_256x128.yaml"),
            "--synthetic", "--iters", "1", "--warmup", "0", "--eval-images", "4", "--out", str(out),
            "model.pretrained", "False", "train.batch_size", "4", "sampler.num_instances", "2", "test.batch_size", "4",
            "data.workers", "0"]
    monkeypatch.setattr(doctor, "_fixed_batch", lambda engine, data, steps: {
        "fixed_batch_losses": [1.0, 0.5], "fixed_batch_loss_falls": True})  # 4 more ViT-B steps add nothing here
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["batch_images"] == 12 and report["model"] == "lfem_vit" and report["grads_finite"]


def test_doctor_refuses_torchreid_models(capsys):
    assert main(["doctor", "--config-file", str(CPU_CONFIG), "--model", "resnet50"]) == 2
    assert "doctor measures the plugin's models; resnet50" in capsys.readouterr().err
