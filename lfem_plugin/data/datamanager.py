"""The one place a data manager is made: torchreid's ``ImageDataManager`` whose datasets are built with the given
transforms, with unreadable images dropped if asked (for this construction only), and under ``torchrun`` with each
rank's share of every global P x K batch.

Reference: torchreid ``data.ImageDataManager``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from .. import _torchreid
from ..utils import distributed as D
from .datasets import skipping_bad_images
from .market_layout import market_layout_options
from .sampler import DistributedIdentitySampler

__all__ = ["ReIDDataManager", "distributed_train_loader", "tune_loader"]

Transform = Callable[[Any], Any]


class _GivenOr:
    """A transform attribute that torchreid's constructor sets: the transform given to :class:`ReIDDataManager` takes
    the place of the one torchreid built (None given: torchreid's stays)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, manager: Any, owner: Optional[type] = None) -> Any:
        return self if manager is None else manager.__dict__[self.name]

    def __set__(self, manager: Any, built: Transform) -> None:
        given = manager._given[self.name]
        manager.__dict__[self.name] = built if given is None else given


class ReIDDataManager(_torchreid.root().data.ImageDataManager):
    """torchreid's ``ImageDataManager`` (all its keyword arguments) built with the plugin's parts from the start.

    torchreid makes its transforms from names inside its constructor and builds the datasets with them right away;
    a transform given here takes the place of torchreid's as the constructor sets it, so every dataset is built with
    it (nothing is swapped afterwards).

    Reference: torchreid ``data.ImageDataManager``.

    Args:
        train_transform: the train transform (e.g. :func:`~lfem_plugin.data.transforms.build_train_transform`'s
            multi-view one); None: torchreid's, from its ``transforms`` names.
        test_transform: the query/gallery transform; None: torchreid's.
        skip_bad_images: drop unreadable images of the plugin's datasets while they are built (decodes every image).
        market_layout: the folder and query folders of ``market_layout`` / ``market_layout_occluded`` while the
            datasets are built (:func:`~lfem_plugin.data.market_layout.market_layout_options` arguments; None:
            its defaults).
        distributed: under ``torchrun``, the arguments of :func:`distributed_train_loader` (None: one process).
        loader: the arguments of :func:`tune_loader` for the train loader (None: as built).
        **kwargs: torchreid's ``ImageDataManager`` arguments (``root``, ``sources``, ``height``, ...).
    """

    def __init__(self, train_transform: Optional[Transform] = None, test_transform: Optional[Transform] = None,
                 skip_bad_images: bool = False, market_layout: Optional[Dict[str, str]] = None,
                 distributed: Optional[Dict[str, Any]] = None, loader: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        self._given = {"transform_tr": train_transform, "transform_te": test_transform}
        with skipping_bad_images(skip_bad_images), market_layout_options(**(market_layout or {})):
            super().__init__(**kwargs)
        if distributed is not None:
            self.train_loader = distributed_train_loader(self.train_loader.dataset, **distributed)
        if loader is not None:
            self.train_loader = tune_loader(self.train_loader, **loader)

    transform_tr = _GivenOr()
    transform_te = _GivenOr()


def distributed_train_loader(dataset, batch_size: int, num_instances: int, seed: int, workers: int, pin_memory: bool,
                             sampler: str) -> torch.utils.data.DataLoader:
    """This rank's train loader: its share (whole identities) of every global P x K batch of ``batch_size``."""
    if sampler != "RandomIdentitySampler":
        raise ValueError("multi-process training needs sampler.train_sampler RandomIdentitySampler")
    share = DistributedIdentitySampler(dataset.train, batch_size, num_instances, D.rank(), D.world_size(), seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size // D.world_size(), sampler=share,
                                       num_workers=workers, pin_memory=pin_memory, drop_last=True)


def tune_loader(loader: torch.utils.data.DataLoader, prefetch_factor: int = 2,
                persistent_workers: bool = False) -> torch.utils.data.DataLoader:
    """``loader`` (same dataset, sampler, batch, workers, pinning) with ``prefetch_factor`` batches prepared ahead
    per worker and ``persistent_workers``; unchanged at torch's defaults or without workers."""
    if loader.num_workers == 0 or (prefetch_factor == 2 and not persistent_workers):
        return loader
    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                                       num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                                       drop_last=loader.drop_last, prefetch_factor=prefetch_factor,
                                       persistent_workers=persistent_workers)
