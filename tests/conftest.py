import random

import numpy as np
import pytest
import torch

import lfem_plugin  # noqa: F401  (registers the plugin into torchreid)

from .helpers import register_synthetic, write_synthetic_reid

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Every test runs in its own folder: the configs' relative defaults (data.root reid-data, data.save_dir log/...)
    never write into the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def synthetic_root(tmp_path):
    """A fresh synthetic ReID set under ``tmp_path/data``, registered as ``synthetic_reid``."""
    root = tmp_path / "data"
    write_synthetic_reid(root)
    register_synthetic()
    return root
