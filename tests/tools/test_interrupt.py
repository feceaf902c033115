"""Issue 38 case 11: SIGTERM during training releases the run lock and says where to resume (the checkpoint and the
``--resume`` command), and that command resumes."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfem_plugin.commands.train import interrupted_message
from lfem_plugin.utils.checkpoint import load_checkpoint
from lfem_plugin.utils.interrupt import TrainingInterrupted
from lfem_plugin.utils.run_lock import LOCK_NAME

from ..helpers import CPU_CONFIG, SMALL

REPO = Path(__file__).resolve().parents[2]
PRE = "import helpers, sys; helpers.register_synthetic(); from lfem_plugin.cli import main; sys.exit(main())"


@pytest.mark.slow
def test_sigterm_releases_the_lock_and_names_the_resume_command(synthetic_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    cmd = [sys.executable, "-c", PRE, "train", "--config-file", str(CPU_CONFIG), "--root", str(synthetic_root),
           "data.save_dir", str(tmp_path), "train.max_epoch", "6", *SMALL]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "model" / "model.pth.tar-1").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert not (tmp_path / LOCK_NAME).exists()  # released: the next run needs no manual clean-up
    line = next(li.strip() for li in err.splitlines() if li.strip().startswith("lfem-reid train --resume"))
    newest = shlex.split(line)[3]
    assert "stopped by SIGTERM; the newest checkpoint is " + newest in err
    done = load_checkpoint(newest)["epoch"]
    out = subprocess.run([sys.executable, "-c", PRE, *shlex.split(line)[1:]], env=env, capture_output=True,
                         text=True, timeout=600)  # the printed command, as printed
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resumed from {newest} (epoch {done})" in out.stderr
    assert load_checkpoint(tmp_path / "model" / "model.pth.tar-6")["epoch"] == 6


def test_the_message_before_any_checkpoint_says_start_again(tmp_path):
    text = interrupted_message(TrainingInterrupted(signal.SIGTERM), str(tmp_path), ["train", "--resume", "x", "a"])
    assert text == f"lfem-reid train: stopped by SIGTERM before the first checkpoint of {tmp_path}; start it again"
