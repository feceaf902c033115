"""Long-run safety: checkpoints are finite, complete and never overwritten by an older epoch; resume is exact from
every checkpoint; one training per folder; everything checkable fails before the first step."""
import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfem_plugin import config as C
from lfem_plugin.tools import preflight, train as T
from lfem_plugin.utils.checkpoint import (DiskFullError, NonFiniteStateError, list_checkpoints, load_checkpoint,
                                          save_checkpoint)
from lfem_plugin.engine import MAX_SKIPPED_FP16_STEPS, LFEMEngine, NonFiniteLossError
from lfem_plugin.tools.inference import load_trained
from lfem_plugin.utils.run_lock import LOCK_NAME, RunLockedError

from ..helpers import CPU_CONFIG, SMALL, SyntheticReID, register_synthetic, tiny_engine, write_synthetic_reid


def _cfg(synthetic_root, save_dir, *opts):
    return C.load_config(CPU_CONFIG, ["data.root", str(synthetic_root), "data.save_dir", str(save_dir), *SMALL, *opts])


def _weights(path):
    return load_checkpoint(path)["state_dict"]


# ---- never lose or corrupt a run -------------------------------------------------------------------------------
def test_checkpoint_with_non_finite_weights_is_never_written(synthetic_root, tmp_path, monkeypatch):
    original = LFEMEngine.update_lr

    def diverge(self):  # the last step of epoch 2 leaves NaN weights behind a finite loss
        if self.epoch == 1:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return original(self)

    monkeypatch.setattr(LFEMEngine, "update_lr", diverge)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2: training diverged.*training loss was still falling is "
                                                 r".*model\.pth\.tar-1\b"):
        T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "3"))
    assert [e for e, _ in list_checkpoints(tmp_path / "run" / "model")] == [1]
    assert not list((tmp_path / "run" / "model").glob(".*.tmp"))


def test_sgd_lr_5_stops_naming_the_newest_finite_checkpoint(synthetic_root, tmp_path):
    cfg = _cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "4", "train.optim", "sgd", "train.lr", "5.0",
               "lfem.warmup_epochs", "0")
    with pytest.raises(NonFiniteLossError, match=r"training loss was still falling is .*model\.pth\.tar-\d"):
        T.run(cfg)
    for _, path in list_checkpoints(tmp_path / "run" / "model"):
        assert all(torch.isfinite(v).all() for v in _weights(path).values() if v.is_floating_point())


def test_save_checkpoint_refuses_nan_optimizer_state(tmp_path):
    state = {"state_dict": {"w": torch.ones(2)}, "optimizer": {"state": {0: {"momentum_buffer": torch.tensor(
        [float("inf")])}}}}
    with pytest.raises(NonFiniteStateError, match="optimizer.state.0.momentum_buffer"):
        save_checkpoint(state, tmp_path / "c.pth")
    assert not list(tmp_path.iterdir())


def test_fp16_skipped_steps_are_not_failures_but_a_run_of_them_is():
    from lfem_plugin.engine.loop import StepRecord
    engine = tiny_engine()
    engine.amp = "fp16"

    def steps(loss, count=1):  # steps as the loop reads them back (every print_freq steps)
        return [StepRecord(0, 0, 1, {"loss": loss}, 0.0, 0.0)] * count
    nan = float("nan")
    engine._check_steps(steps(nan, MAX_SKIPPED_FP16_STEPS - 1))
    engine._check_steps(steps(1.0))  # a good step resets the count
    engine._check_steps(steps(nan, MAX_SKIPPED_FP16_STEPS - 1))
    with pytest.raises(NonFiniteLossError):
        engine._check_steps(steps(nan))
    engine.amp = "off"
    with pytest.raises(NonFiniteLossError):
        engine._check_steps(steps(nan))


def test_resume_auto_on_a_finished_run_writes_nothing(synthetic_root, tmp_path, capsys):
    from lfem_plugin.cli import main
    T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "2"))
    folder = tmp_path / "run" / "model"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}
    assert main(["train", "--config-file", str(CPU_CONFIG), "--root", str(synthetic_root), "--resume", "auto",
                 "data.save_dir", str(tmp_path / "run"), "train.max_epoch", "2", *SMALL]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()} == before


def test_resume_from_an_older_checkpoint_would_overwrite_newer_ones(synthetic_root, tmp_path):
    T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "2"))
    older = tmp_path / "run" / "model" / "model.pth.tar-1"
    with pytest.raises(FileExistsError, match=r"model\.pth\.tar-2.*--resume auto"):
        T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "3"), resume=str(older))
    engine = tiny_engine()
    engine.resumed_epoch = 5
    with pytest.raises(RuntimeError, match="epoch-3 checkpoint of a run resumed at epoch 5"):
        engine.save_model(2, 0.0, str(tmp_path / "other"))


def test_resume_auto_without_checkpoint_says_it_starts_from_scratch(synthetic_root, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "1"), resume="auto")
    assert "no checkpoint in" in caplog.text and "starting from scratch" in caplog.text


@pytest.mark.slow
def test_resume_is_exact_from_every_checkpoint_including_evaluation_epochs(synthetic_root, tmp_path, monkeypatch):
    """Every checkpoint file as it was written (the one saved before an evaluation too, which a kill during that
    evaluation would leave behind) resumes to the uninterrupted run's final weights, bit for bit."""
    from lfem_plugin.engine import checkpointing as E  # where the engines look save_checkpoint up
    written = []

    def snapshot(state, path):
        out = save_checkpoint(state, path)
        written.append(tmp_path / "snapshots" / f"{len(written)}-{Path(path).name}")
        written[-1].parent.mkdir(exist_ok=True)
        shutil.copy(out, written[-1])
        return out

    monkeypatch.setattr(E, "save_checkpoint", snapshot)
    opts = ("train.max_epoch", "4", "test.eval_freq", "2")
    T.run(_cfg(synthetic_root, tmp_path / "full", *opts))
    monkeypatch.undo()
    reference = _weights(tmp_path / "full" / "model" / "model.pth.tar-4")
    resumable = [p for p in written if not p.name.endswith("tar-4")]
    assert len(resumable) == 4  # epochs 1, 2 (before and after its evaluation), 3
    for snap in resumable:
        run_dir = tmp_path / f"resumed-{snap.name}"
        (run_dir / "model").mkdir(parents=True)
        shutil.copy(snap, run_dir / "model" / snap.name.split("-", 1)[1])
        T.run(_cfg(synthetic_root, run_dir, *opts), resume="auto")
        resumed = _weights(run_dir / "model" / "model.pth.tar-4")
        assert all(torch.equal(reference[k], resumed[k]) for k in reference), f"resumed from {snap.name}"


def test_a_second_training_into_the_same_folder_is_refused(synthetic_root, tmp_path):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (save_dir / LOCK_NAME).write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}", '
                                          f'"started": "now", "command": "lfem-reid train"}}')
        with pytest.raises(RunLockedError, match=rf"pid {sleeper.pid}.*another data.save_dir"):
            T.run(_cfg(synthetic_root, save_dir, "train.max_epoch", "1"))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (save_dir / "model").exists()


def test_a_stale_lock_is_taken_over_and_released(synthetic_root, tmp_path, caplog):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (save_dir / LOCK_NAME).write_text(f'{{"pid": {gone.pid}, "host": "{os.uname().nodename}"}}')
    with caplog.at_level(logging.WARNING):
        T.run(_cfg(synthetic_root, save_dir, "train.max_epoch", "1"))
    assert "stale lock" in caplog.text and not (save_dir / LOCK_NAME).exists()
    assert (save_dir / "model" / "model.pth.tar-1").is_file()


def test_orphan_tmp_removed_and_checkpoints_have_normal_permissions(synthetic_root, tmp_path):
    folder = tmp_path / "run" / "model"
    folder.mkdir(parents=True)
    orphan = folder / ".model.pth.tar-3.abc123.tmp"
    orphan.write_bytes(b"half")
    old = os.umask(0o022)
    try:
        T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "1"))
    finally:
        os.umask(old)
    assert not orphan.exists()
    assert (folder / "model.pth.tar-1").stat().st_mode & 0o777 == 0o644


def test_full_disk_names_path_and_bytes_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "model.pth.tar-1"
    save_checkpoint({"state_dict": {"w": torch.ones(4)}}, target)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(DiskFullError, match=r"no space to write checkpoint .*tar-1: it needs about \d+ MiB"):
        save_checkpoint({"state_dict": {"w": torch.zeros(4)}}, target)
    monkeypatch.undo()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="no space to write checkpoint"):
        save_checkpoint({"state_dict": {"w": torch.zeros(4)}}, target)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(target)["state_dict"]["w"], torch.ones(4))
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_module_prefixed_state_dict_loads(synthetic_root, tmp_path):
    T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "1"))
    state = load_checkpoint(tmp_path / "run" / "model" / "model.pth.tar-1")
    state["state_dict"] = {"module." + k: v for k, v in state["state_dict"].items()}
    torch.save(state, tmp_path / "ddp.pth")
    model, _ = load_trained(str(tmp_path / "ddp.pth"))
    assert model.heads[0].classifier.weight.shape[0] == 6


def test_torchreid_checkpoint_with_numpy_rank1_loads(tmp_path):
    import numpy as np
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3, "rank1": np.float32(0.5)}, tmp_path / "tr.pth")
    assert load_checkpoint(tmp_path / "tr.pth")["rank1"] == 0.5


# ---- fail before training --------------------------------------------------------------------------------------
@pytest.mark.parametrize("opts, match", [
    (("train.max_epoch", "0"), "train.max_epoch is 0"),
    (("train.max_epoch", "-3"), "train.max_epoch is -3"),
    (("test.dist_metric", "cosin"), r"test.dist_metric 'cosin' \(in the KEY VALUE overrides\) is not one of"),
    (("data.type", "video"), "data.type 'video'"),
    (("train.batch_size", "9"), "not a multiple of sampler.num_instances 2.*use 8 or 10"),
    (("train.batch_size", "40"), r"20 identities per batch, but the training set \(synthetic_reid\) has 6"),
])
def test_bad_settings_fail_before_training(synthetic_root, tmp_path, opts, match):
    with pytest.raises(ValueError, match=match):  # PreflightError, or (a bad name) the config loader's ValueError
        T.run(_cfg(synthetic_root, tmp_path / "run", *opts))
    assert not (tmp_path / "run" / "model").exists()


def test_too_few_identities_under_torchrun_is_the_actionable_preflight_error(synthetic_root, tmp_path, monkeypatch):
    """Old code: the diagnostic rebuild took this rank's share, whose sampler raised a bare ValueError first."""
    from lfem_plugin.utils import distributed as D
    monkeypatch.setattr(D, "is_distributed", lambda: True)
    monkeypatch.setattr(D, "world_size", lambda: 2)
    monkeypatch.setattr(D, "rank", lambda: 0)
    cfg = _cfg(synthetic_root, tmp_path / "run", "train.batch_size", "40")
    with pytest.raises(preflight.PreflightError, match=r"20 identities per batch, but the training set .* has 6"):
        T.build_datamanager(cfg)


def test_one_identity_per_batch_warns(caplog):
    cfg = C.load_config(CPU_CONFIG, ["train.batch_size", "4", "sampler.num_instances", "4"])
    with caplog.at_level(logging.WARNING):
        preflight.check_config(cfg)
    assert "one identity per batch" in caplog.text


def test_unreadable_test_image_fails_before_training_or_is_skipped(synthetic_root, tmp_path, caplog):
    bad = sorted((synthetic_root / "synthetic_reid" / "gallery").glob("*.jpg"))[0]
    bad.write_bytes(b"not an image")
    with pytest.raises(preflight.PreflightError, match=rf"gallery: 1 of 12 images cannot be read \({bad}"):
        T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "1"))
    assert not (tmp_path / "run" / "model").exists()
    items = [(str(bad), 1, 1), (str(next(bad.parent.glob("0101*"))), 101, 1)]
    with caplog.at_level(logging.WARNING):
        preflight.check_test_images("x", "gallery", items, skip_bad_images=True)
    assert len(items) == 1 and "skipped 1 unreadable" in caplog.text


def test_decompression_bomb_is_an_unreadable_image(tmp_path, monkeypatch):
    from PIL import Image

    from lfem_plugin.tools.inference import BadImageError, read_image
    Image.new("RGB", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadImageError, match="bomb.png"):
        read_image(str(tmp_path / "bomb.png"))
    assert not preflight._header_ok(str(tmp_path / "bomb.png"))


def test_query_identities_must_reach_the_gallery(caplog):
    query = [("q1", 1, 0), ("q2", 2, 0)]
    with pytest.raises(preflight.PreflightError, match="no query identity"):
        preflight.check_query_matches("x", query, [("g", 1, 0), ("g", 3, 1)])  # id 1 only from the query's camera
    with caplog.at_level(logging.WARNING):
        preflight.check_query_matches("x", query, [("g", 1, 1)])
    assert "1 of 2 queries have no gallery match" in caplog.text


def test_training_cameras_c1_and_c6_get_two_sie_rows_and_unseen_test_cameras_fail_early(tmp_path):
    data = tmp_path / "data"
    write_synthetic_reid(data)
    register_synthetic()
    for path in (data / "synthetic_reid" / "train").glob("*_c2_*"):
        path.rename(path.with_name(path.name.replace("_c2_", "_c6_")))
    engine = T.run(_cfg(data, tmp_path / "run", "train.max_epoch", "1", "test.use_cameras", "False"))
    assert engine.model.backbone.sie.camera_ids.tolist() == [0, 5]
    with pytest.raises(preflight.PreflightError, match=r"test camera ids \[1\] never occur in training.*"
                                                       r"test.use_cameras False"):
        T.run(_cfg(data, tmp_path / "run2", "train.max_epoch", "1"))


# ---- one build path ----------------------------------------------------------------------------------------------
def test_a_run_asks_the_model_family_and_the_training_cameras_once(synthetic_root, tmp_path, monkeypatch):
    calls = {"family": 0, "train_cameras": 0}
    for name in calls:
        original = getattr(T, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(T, name, counted)
    engine = T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "1"))
    assert calls == {"family": 1, "train_cameras": 1}
    assert engine.model.build_args().camera_ids == [0, 1]  # the cameras computed once reached the model
    stored = load_checkpoint(tmp_path / "run" / "model" / "model.pth.tar-1")["model_args"]
    assert stored == {"num_classes": 6, "num_cameras": 2, "camera_ids": [0, 1]}


def test_skip_bad_images_holds_for_its_run_only(synthetic_root, tmp_path):
    bad = next((synthetic_root / "synthetic_reid" / "train").glob("*.jpg"))
    bad.write_bytes(b"not an image")
    dm = T.build_datamanager(_cfg(synthetic_root, tmp_path / "run", "data.skip_bad_images", "True"))
    assert str(bad) not in {item[0] for item in dm.train_loader.dataset.train}
    later = SyntheticReID(root=str(synthetic_root), verbose=False)  # built outside any run: nothing is skipped
    assert str(bad) in {item[0] for item in later.train}


# ---- preflight: a BatchNorm that would see one sample -----------------------------------------------------------
def test_check_batch_norm_on_hand_built_models():
    from torch import nn

    from lfem_plugin.tools.preflight import PreflightError, check_batch_norm
    head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    check_batch_norm(head, 2)
    check_batch_norm(nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)), 1)  # one image still has H x W values
    with pytest.raises(PreflightError, match=r"train.batch_size 1 gives 1 sample.*1 BatchNorm layers \(e.g. 1\)"):
        check_batch_norm(head, 1)
    with pytest.raises(PreflightError, match="train.batch_size 3 shared by 2 processes gives 1 sample"):
        check_batch_norm(head, 3, world_size=2)


def test_train_batch_size_1_is_refused_before_training(synthetic_root, tmp_path, capsys):
    from lfem_plugin.cli import main
    argv = ["train", "--config-file", str(CPU_CONFIG), "data.root", str(synthetic_root), "data.save_dir",
            str(tmp_path / "run"), "train.max_epoch", "1", *SMALL, "train.batch_size", "1", "sampler.num_instances",
            "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train.batch_size 1 gives 1 sample(s) per step" in err and "BatchNorm" in err
    assert not (tmp_path / "run" / "model").exists()  # nothing trained
