"""A target's query and gallery lists on their own, without a training split: what evaluating a checkpoint needs.

torchreid's ``ImageDataManager`` always builds its sources' training splits (and sizes a classifier from them);
evaluation needs only the test lists, so a test-only Market-layout folder, a registered test-only benchmark or any
registered dataset can be a target of a trained checkpoint.

Reference: torchreid ``data.datasets.init_image_dataset`` (``mode='query'``); fast-reid ``build_reid_test_loader``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .. import _torchreid
from .datasets import skipping_bad_images
from .market_layout import market_layout_options

__all__ = ["load_test_set", "Item"]

Item = Tuple  # (image path, pid, camid, dsetid), torchreid's item


def load_test_set(name: str, root: str, market_layout: Optional[Dict[str, str]] = None,
                  skip_bad_images: bool = False) -> Tuple[List[Item], List[Item]]:
    """The query and gallery items of the registered dataset ``name`` under ``root``.

    Args:
        name: a registered torchreid dataset (the plugin's included: ``market_layout``, ``occluded_reid``, ...).
        root: the data root (``data.root``).
        market_layout: the ``data.market_layout.*`` options while the dataset is built (None: their defaults).
        skip_bad_images: drop unreadable images with a warning (decodes every image).

    Raises:
        ValueError: ``name`` is not registered (torchreid's message lists the names).
        FileNotFoundError: the dataset's folder or a split is missing (the dataset's own message).
    """
    with skipping_bad_images(skip_bad_images), market_layout_options(**(market_layout or {})):
        dataset = _torchreid.root().data.datasets.init_image_dataset(name, transform=None, mode="query",
                                                                     combineall=False, root=root, verbose=False)
    return list(dataset.query), list(dataset.gallery)
