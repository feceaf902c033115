import random

import numpy as np
import pytest
import torch

import lfem_plugin  # noqa: F401  (registers the plugin into torchreid)

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
