"""Issue 38 case 3: a resumed run follows the current config's schedule - a changed ``train.lr`` or a raised
``train.max_epoch`` runs the epochs after the resume point at the learning rates a fresh run of that config has
there (an unchanged config still resumes exactly: tests/engine/test_engines.py, tests/tools/test_train.py)."""
from __future__ import annotations

import logging

from lfem_plugin import config as C
from lfem_plugin.tools import train as T
from lfem_plugin.utils.checkpoint import load_checkpoint

from ..helpers import CPU_CONFIG, SMALL


def _run(root, out, epochs, lr, resume=""):
    T.run(C.load_config(CPU_CONFIG, ["data.root", str(root), "data.save_dir", str(out), "train.max_epoch",
                                     str(epochs), "train.lr", str(lr), "lfem.warmup_epochs", "1", *SMALL]),
          resume=resume)


def _lrs(out, epoch):
    return [g["lr"] for g in load_checkpoint(out / "model" / f"model.pth.tar-{epoch}")["optimizer"]["param_groups"]]


def test_a_lower_lr_on_resume_gives_the_fresh_runs_rates(synthetic_root, tmp_path, caplog):
    _run(synthetic_root, tmp_path / "a", 2, 1e-3)
    _run(synthetic_root, tmp_path / "fresh", 4, 1e-4)
    with caplog.at_level(logging.WARNING):  # a lower lr and the 4-epoch schedule, from epoch 2 of the 1e-3 run
        _run(synthetic_root, tmp_path / "a", 4, 1e-4, resume="auto")
    assert "with the current config's optimisation" in caplog.text and "base_values" in caplog.text
    for epoch in (3, 4):
        assert _lrs(tmp_path / "a", epoch) == _lrs(tmp_path / "fresh", epoch)


def test_training_further_after_the_end_follows_the_longer_schedule(synthetic_root, tmp_path):
    _run(synthetic_root, tmp_path / "a", 2, 1e-3)
    _run(synthetic_root, tmp_path / "fresh", 5, 1e-3)
    _run(synthetic_root, tmp_path / "a", 5, 1e-3, resume="auto")  # train.max_epoch raised: the advice of "nothing
    assert _lrs(tmp_path / "a", 2) == [2e-6, 2e-6]  # to do"; the 2-epoch schedule had reached its floor
    for epoch in (3, 4, 5):
        assert _lrs(tmp_path / "a", epoch) == _lrs(tmp_path / "fresh", epoch)
    assert _lrs(tmp_path / "a", 3)[0] > 10 * 2e-6  # not the floor
