"""The model families of a run: the plugin's registered models (:class:`PluginFamily`), torchreid's own
(:class:`TorchreidFamily`) and a research project's (:func:`register_family`); :func:`family` is the one place they
part. Each family builds the data manager's transforms, the model and the engine of its models.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from yacs.config import CfgNode

from .. import _torchreid, config as C
from ..data.transforms import build_test_transform, build_train_transform
from ..engine import LFEMEngine, TorchreidSoftmaxEngine, TorchreidTripletEngine
from ..losses import MultiBranchLoss, branch_weights
from ..optim import WarmupCosineLR, build_optimizer
from ..registry import MODELS
from ..utils import distributed as D
from ..utils.distributed import unwrap as _unwrap

__all__ = ["PluginFamily", "TorchreidFamily", "Family", "family", "register_family", "is_plugin_model"]

_logger = logging.getLogger(__name__)
_TR = _torchreid.root()


def is_plugin_model(name: str) -> bool:
    return name in MODELS


class TorchreidFamily:
    """torchreid's own models: torchreid's transforms (flip), model factory, optimiser and engines - the latter
    with the plugin's evaluation and checkpoints, so a comparison scores and saves every model the same way."""

    def check_config(self, cfg: CfgNode) -> None:
        """Checks of the family's own keys before a run (:func:`lfem_plugin.tools.preflight.check_config` runs the
        core's); none here."""

    def datamanager_kwargs(self, cfg: CfgNode) -> Dict[str, Any]:
        return C.imagedata_kwargs(cfg, ["random_flip"])  # torchreid's own, with the configured normalisation

    def sie_cameras(self, cfg: CfgNode, cameras: List[int]) -> List[int]:
        return []

    def build_model(self, cfg: CfgNode, num_classes: int, num_cameras: int, camera_ids=None) -> torch.nn.Module:
        return _TR.models.build_model(cfg.model.name, num_classes=num_classes, **C.build_model_kwargs(cfg))

    def build_engine(self, cfg: CfgNode, dm, model: torch.nn.Module, use_gpu: bool):
        optimizer = _TR.optim.build_optimizer(model, **C.torchreid_optimizer_kwargs(cfg))
        scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
        kwargs = dict(scheduler=scheduler, use_gpu=use_gpu, **C.torchreid_engine_kwargs(cfg))
        engine = TorchreidSoftmaxEngine if cfg.loss.name == "softmax" else TorchreidTripletEngine
        return engine(dm, model, optimizer, **kwargs), model


class PluginFamily:
    """The plugin's models: multi-view train transform, camera SIE sized to the training cameras, the
    TransReID optimiser groups, the seven-branch criterion, AMP / compile / DDP, and :class:`LFEMEngine`.

    A research project subclasses it (the hooks ``train_transform``, ``model_extras``, ``engine_class`` /
    ``engine_kwargs``, ``check_config``) and says when it applies with :func:`register_family`."""

    engine_class = LFEMEngine

    def check_config(self, cfg: CfgNode) -> None:
        """Checks of the family's own keys before a run; none here."""

    def train_transform(self, cfg: CfgNode):
        """The multi-view train transform (original, erased, cropped views)."""
        return build_train_transform(**C.transform_kwargs(cfg))

    def model_extras(self, cfg: CfgNode) -> Dict[str, Any]:
        """Builder arguments beyond the config's :func:`~lfem_plugin.config.adapters.model_kwargs`; none here."""
        return {}

    def engine_kwargs(self, cfg: CfgNode) -> Dict[str, Any]:
        """:attr:`engine_class`'s keyword arguments from the config."""
        return C.lfem_engine_kwargs(cfg)

    def datamanager_kwargs(self, cfg: CfgNode) -> Dict[str, Any]:
        return dict(C.imagedata_kwargs(cfg, None), train_transform=self.train_transform(cfg),
                    test_transform=build_test_transform(**C.test_transform_kwargs(cfg)))

    def sie_cameras(self, cfg: CfgNode, cameras: List[int]) -> List[int]:
        cameras = cameras if cfg.lfem.use_sie else []
        return cameras if len(cameras) > 1 else []

    def build_model(self, cfg: CfgNode, num_classes: int, num_cameras: int, camera_ids=None) -> torch.nn.Module:
        builder = MODELS.get(cfg.model.name)
        _check_normalisation(cfg, builder)
        return builder(num_classes=num_classes, **C.build_model_kwargs(cfg),
                       **C.model_kwargs(cfg, num_cameras, camera_ids), **self.model_extras(cfg))

    def build_engine(self, cfg: CfgNode, dm, model: torch.nn.Module, use_gpu: bool):
        optimizer = build_optimizer(model, **C.optimizer_kwargs(cfg))
        acceleration = C.acceleration_kwargs(cfg)
        if use_gpu and acceleration["tf32"]:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if D.is_distributed():
            # The trunk's last block is not built under JPM, so every parameter is used: no find_unused_parameters.
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()]
                                                              if use_gpu else None)
        scheduler = WarmupCosineLR(optimizer, **C.scheduler_kwargs(cfg))
        names = _unwrap(model).branch_names
        criterion = MultiBranchLoss(names, **C.criterion_kwargs(cfg, branch_weights(names, cfg.lfem.loss_weights)))
        engine = self.engine_class(dm, model, optimizer, scheduler, criterion, use_gpu=use_gpu,
                                   **self.engine_kwargs(cfg))
        if acceleration["compile"]:
            engine.compile()  # the training step (model + loss) and, in place, the model (checkpoints keep their keys)
        return engine, model


Family = Union[PluginFamily, TorchreidFamily]


_FAMILIES: List[Callable[[CfgNode], Optional[Family]]] = []


def register_family(select: Callable[[CfgNode], Optional[Family]]) -> None:
    """A research project's training family: ``select(cfg)`` returns it for the configs it trains (its registered
    names, or its keys turned on) and None otherwise. Idempotent; the newest registered is asked first."""
    if select not in _FAMILIES:
        _FAMILIES.insert(0, select)


def family(cfg: CfgNode) -> Family:
    """The one place the model families part: a registered project's (:func:`register_family`), the plugin's
    registered models or torchreid's. A run asks once (:func:`set_up`) and passes the answer on."""
    for select in _FAMILIES:
        chosen = select(cfg)
        if chosen is not None:
            return chosen
    return PluginFamily() if is_plugin_model(cfg.model.name) else TorchreidFamily()



def _check_normalisation(cfg: CfgNode, builder) -> None:
    """ImageNet weights expect the normalisation they were trained with; say so when the config differs."""
    if not cfg.model.pretrained or not hasattr(builder, "arch"):
        return
    from ..models.backbones import backbone_norm
    mean, std = backbone_norm(builder.arch)
    configured = list(cfg.data.norm_mean) + list(cfg.data.norm_std)
    if any(abs(a - b) > 1e-6 for a, b in zip(list(mean) + list(std), configured)):
        _logger.warning("data.norm_mean/norm_std %s/%s differ from the normalisation of %s's ImageNet weights %s/%s; "
                        "set them to match", list(cfg.data.norm_mean), list(cfg.data.norm_std), builder.arch,
                        list(mean), list(std))
