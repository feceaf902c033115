"""Issue 38 case 3, second half: after a divergence the message names a checkpoint that trains (the newest finite
one is often already diverging: finite weights, an epoch loss hundreds of times the best)."""
from __future__ import annotations

import math
import re

import pytest

from lfem_plugin import config as C
from lfem_plugin.engine import NonFiniteLossError
from lfem_plugin.tools import train as T
from lfem_plugin.utils.checkpoint import load_checkpoint

from ..helpers import CPU_CONFIG, SMALL


def _cfg(root, out, *extra):
    return C.load_config(CPU_CONFIG, ["data.root", str(root), "data.save_dir", str(out), *SMALL, "train.optim",
                                      "sgd", "lfem.warmup_epochs", "0", *extra])


def test_the_advice_names_a_checkpoint_that_trains_not_the_newest_finite_one(synthetic_root, tmp_path):
    with pytest.raises(NonFiniteLossError) as caught:  # SGD at lr 3: finite for 2 epochs, NaN in the third
        T.run(_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "30", "train.lr", "3.0"))
    named = re.search(r"training loss was still falling is (\S+) ", str(caught.value)).group(1)
    folder = tmp_path / "run" / "model"
    newest = max(folder.glob("model.pth.tar-*"), key=lambda p: int(p.name.split("-")[-1]))
    assert named != str(newest) and "finite but already diverging" in str(caught.value)
    losses = {p.name: load_checkpoint(p)["train_loss"] for p in folder.glob("model.pth.tar-*")}
    assert losses[newest.name] > 2 * losses[named.split("/")[-1]]
    # what the advice says to do: a lower lr from the named checkpoint (here as new weights, a fresh optimiser)
    engine = T.set_up(_cfg(synthetic_root, tmp_path / "again", "train.max_epoch", "1", "train.lr", "1e-4",
                           "model.load_weights", named)).engine
    data = next(iter(engine.datamanager.train_loader))
    steps = [float(engine.forward_backward(data)["loss"]) for _ in range(3)]
    assert all(math.isfinite(s) for s in steps) and steps[-1] < steps[0] < 10 * losses[named.split("/")[-1]]
