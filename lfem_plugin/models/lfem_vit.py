"""The paper's model: TransReID backbone + LFEM sequential fusion + seven supervised branches.

Reference: Wang, "Enhancing Global Features with Fine-Grained Local Features for Occluded Person
Re-identification" (Sec. 3), on top of TransReID (ICCV 2021).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import nn

from ..registry import MODELS
from .backbones import ARCHS, build_backbone
from .head import BNNeckHead
from .interface import BranchFeatures, BranchOutputs, BuildArgs, Views, Window, stack_views, with_build_spec
from .lfem import SequentialFusion, fusion_block
from .visibility import TokenGeometry
from .vit import TransReIDViT

__all__ = ["LFEMViT", "BranchOutputs", "BranchFeatures", "VIEW_NAMES", "create_lfem_vit", "build_args_of",
           "register_variant"]

_logger = logging.getLogger(__name__)

VIEW_NAMES = ("original", "erased", "cropped")  # the views of data.transforms.MultiView, in its order


class LFEMViT(nn.Module):
    """TransReID ViT + Local Feature Enhancement Module, supervised on seven branches; a
    :class:`~lfem_plugin.models.interface.ReIDModel`.

    Train mode: the views (original, random-erased, random-cropped) go through the shared network in **one**
    batched forward; each view's global feature is fused with its four JPM locals by :class:`SequentialFusion`
    (``f_final``); the four locals of the original view are supervised too. Returns logits (``loss='softmax'``) or
    ``(logits, features)`` (``loss='triplet'``) as lists in branch order ``original, erased, cropped, local1..4``
    (each view's branch is its fused final feature ``f_final``).
    Fewer views than ``num_views`` (e.g. torchreid's stock engines with one tensor) supervise only what exists.
    Eval mode: one view in, one ``(B, D')`` feature out.

    Readings chosen where the paper is silent:
      * ``local_feature``: which "intermediate local feature from LFEM" a local branch supervises -
        ``'refined'`` (default) the local after enhancement ``f_l + f'_k``; ``'jpm'`` the raw JPM local
        ``f_l`` (TransReID's supervision); ``'fused'`` the intermediate fused global ``g_k``.
      * ``eval_feature``: ``'final'`` (default, the paper's "final global feature") or ``'concat'``
        (TransReID's ``[f, l_1/K, ..., l_K/K]``); ``neck_feat``: ``'before'`` (paper) or ``'after'`` the BNNeck.
      * Without cameras (``camera=None``: torchreid's ``FeatureExtractor``) the SIE term is left out.

    Reference: LFEM paper Sec. 3.1-3.4; TransReID Sec. 3.

    Args:
        num_classes: training identities.
        backbone: a :class:`TransReIDViT` with JPM.
        loss: torchreid's ``'softmax'`` or ``'triplet'`` output contract.
        num_views: global branches (default 3: original, erased, cropped; 1: no RE/RC views).
        views: the names of the views the data gives, in order (default: the first ``num_views`` of
            ``VIEW_NAMES``); the global branches and their loss terms carry these names.
        use_lfem: fuse locals into the global feature (False: the plain TransReID heads).
        lfem_proj_dim: LFEM projection width (None: ``D``).
        lfem_scale_gate: scale the relation by ``1/sqrt(proj_dim)``.
        lfem_share: one LFEM for all groups.
        local_feature: ``'refined' | 'jpm' | 'fused'``.
        neck_feat: ``'before' | 'after'``.
        eval_feature: ``'final' | 'concat'``.
        lfem_block: the fusion's block by its registered name (:func:`~lfem_plugin.models.lfem.fusion_block`;
            ``'lfem'``: the paper's :class:`~lfem_plugin.models.lfem.LFEM`; a research project registers its own,
            e.g. ``projects/visibility``), so the model's arguments stay plain data.
        lfem_block_args: that block's own arguments (names and values: plain data).
    """

    def __init__(self, num_classes: int, backbone: TransReIDViT, loss: Literal["softmax", "triplet"] = "softmax",
                 num_views: Optional[int] = None, views: Optional[Sequence[str]] = None, use_lfem: bool = True,
                 lfem_proj_dim: Optional[int] = None,
                 lfem_scale_gate: bool = True, lfem_share: bool = False,
                 local_feature: Literal["refined", "jpm", "fused"] = "refined",
                 neck_feat: Literal["before", "after"] = "before",
                 eval_feature: Literal["final", "concat"] = "final", lfem_block: str = "lfem",
                 lfem_block_args: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        if backbone.jpm is None:
            raise ValueError("LFEMViT needs a backbone built with jpm=True")
        _check_choice("loss", loss, ("softmax", "triplet"))
        _check_choice("local_feature", local_feature, ("refined", "jpm", "fused"))
        _check_choice("neck_feat", neck_feat, ("before", "after"))
        _check_choice("eval_feature", eval_feature, ("final", "concat"))
        views = tuple(views) if views is not None else VIEW_NAMES[:3 if num_views is None else num_views]
        if not 1 <= len(views) <= len(VIEW_NAMES) or len(set(views)) < len(views) or set(views) - set(VIEW_NAMES):
            raise ValueError(f"views {list(views)}: 1 to {len(VIEW_NAMES)} distinct names of {list(VIEW_NAMES)}")
        if num_views is not None and num_views != len(views):
            raise ValueError(f"views {list(views)} but num_views {num_views}")
        num_views = len(views)
        if not use_lfem and local_feature != "jpm":
            local_feature = "jpm"  # without LFEM the only local feature is the JPM one
        self.backbone = backbone
        self.loss = loss
        self.num_views = num_views
        self.local_feature = local_feature
        self.neck_feat = neck_feat
        self.eval_feature = eval_feature
        dim = self.num_features = backbone.num_features
        groups = backbone.num_groups
        block = fusion_block(lfem_block, **(lfem_block_args or {}))
        self.fusion = SequentialFusion(dim, groups, lfem_share, lfem_proj_dim, lfem_scale_gate, block) \
            if use_lfem else None
        self.branch_names = views + tuple(f"local{k + 1}" for k in range(groups))  # named as the data's views
        self.heads = nn.ModuleList(BNNeckHead(dim, num_classes) for _ in self.branch_names)

    @property
    def use_lfem(self) -> bool:
        return self.fusion is not None

    @property
    def uses_sie(self) -> bool:
        """Camera ids change the features (camera SIE with more than one training camera)."""
        return self.backbone.sie.enabled

    def build_args(self) -> BuildArgs:
        """The data-given sizes this model was built with: identities, SIE rows and their raw camera ids."""
        sie = self.backbone.sie
        return BuildArgs(self.heads[0].classifier.out_features, sie.num_cameras,
                         sie.camera_ids.tolist() if sie.enabled else None)

    @property
    def img_size(self) -> Tuple[int, int]:
        """The input ``(height, width)``."""
        return tuple(self.backbone.patch_embed.img_size)

    def group_windows(self) -> List[List[Window]]:
        """Each JPM group's patches as pixel windows ``(top, left, height, width)`` of the input image."""
        embed = self.backbone.patch_embed
        cols, stride, patch = embed.grid_size[1], embed.stride, embed.patch_size[0]
        return [[(r * stride, c * stride, patch, patch) for r, c in (divmod(i, cols) for i in group)]
                for group in self.backbone.group_token_indices()]

    def token_geometry(self) -> TokenGeometry:
        """The patch grid and JPM grouping of the backbone (the order the gates' tokens come in)."""
        return TokenGeometry.of(self.backbone)

    def gates(self, x: torch.Tensor, camera: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The LFEM relation gates ``(B, K)`` of one view ``(B, 3, H, W)``; None without LFEM."""
        return self._global_and_locals(x, camera)[2]

    def _global_and_locals(self, x: torch.Tensor, camera: Optional[torch.Tensor]):
        out = self.backbone(x, camera)
        if self.fusion is None:
            return out.global_feat, list(out.local_feats), None, None, None
        fused = self.fusion(out.global_feat, out.local_feats, out.local_tokens)
        if self.local_feature == "jpm":
            locals_ = list(out.local_feats)
        elif self.local_feature == "refined":
            locals_ = [f + r for f, r in zip(out.local_feats, fused.refined)]
        else:
            locals_ = list(fused.stages)
        return fused.final, locals_, fused.gates, fused.logits, fused.aux

    def forward_branch_features(self, x: Views, camera: Optional[torch.Tensor] = None) -> BranchFeatures:
        """Training forward over all views in one batch, up to the pre-BN branch features (no heads)."""
        images, num_views = stack_views(x)
        if num_views > self.num_views:
            raise ValueError(f"got {num_views} views but the model has {self.num_views} global branches "
                             f"(num_views); build it with num_views={num_views}")
        if self.training:
            self._warn_what_is_lost(num_views, camera)
        batch = images.shape[0] // num_views
        if camera is not None:
            camera = torch.as_tensor(camera, device=images.device).reshape(-1).repeat(num_views)
        final, locals_, gates, logits, aux = self._global_and_locals(images, camera)
        features = list(final.split(batch)) + [local[:batch] for local in locals_]
        names = self.branch_names[:num_views] + self.branch_names[self.num_views:]
        gates = None if gates is None else gates[:batch]
        return BranchFeatures(names, features, gates, logits, aux)

    def _warn_what_is_lost(self, num_views: int, camera: Optional[torch.Tensor]) -> None:
        """Once per model: training on fewer views than it has (torchreid's stock ``ImageDataManager`` gives one) or
        without camera ids under SIE silently trains another model; say what is lost and how to get it back."""
        lost = []
        if num_views < self.num_views:
            lost.append(f"the {', '.join(self.branch_names[num_views:self.num_views])} view(s) and their heads "
                        f"({num_views} of {self.num_views} views arrive)")
        if camera is None and self.backbone.sie.enabled:
            lost.append("the camera embedding (SIE): no camera ids are passed")
        if lost and not getattr(self, "_warned_lost", False):
            self._warned_lost = True
            _logger.warning("%s trains without %s. Build the data manager with lfem_plugin.build_datamanager(cfg) "
                            "(multi-view train transform) and train with lfem_plugin.engine.LFEMEngine (or "
                            "`lfem-reid train`), which passes the views and the cameras", type(self).__name__,
                            "; and without ".join(lost))

    def classify(self, names: Sequence[str], features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Each branch's BNNeck + classifier logits."""
        index = {name: i for i, name in enumerate(self.branch_names)}
        return [self.heads[index[name]](feat)[1] for name, feat in zip(names, features)]

    def forward_branches(self, x: Views, camera: Optional[torch.Tensor] = None) -> BranchOutputs:
        """Training forward: every branch's logits and pre-BN features."""
        out = self.forward_branch_features(x, camera)
        return BranchOutputs(out.names, self.classify(out.names, out.features), out.features, out.gates)

    def forward_eval(self, x: torch.Tensor, camera: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One view in, the retrieval feature out (see ``eval_feature`` / ``neck_feat``)."""
        final, locals_, *_ = self._global_and_locals(x, camera)
        feats = [final] + (locals_ if self.eval_feature == "concat" else [])
        if self.neck_feat == "after":
            heads = [self.heads[0]] + list(self.heads[self.num_views:])
            feats = [head.bn(f) for head, f in zip(heads, feats)]
        if len(feats) == 1:
            return feats[0]
        return torch.cat([feats[0]] + [f / len(locals_) for f in feats[1:]], dim=1)

    def forward(self, x: Views, camera: Optional[torch.Tensor] = None, branch_features: bool = False) -> Any:
        """torchreid's contract; ``branch_features=True`` returns :class:`BranchFeatures` (used by the plugin
        engine, so that DistributedDataParallel sees the forward and the heads can run on gathered features)."""
        if branch_features:
            return self.forward_branch_features(x, camera)
        if not self.training:
            return self.forward_eval(x, camera)
        out = self.forward_branches(x, camera)
        return out.logits if self.loss == "softmax" else (out.logits, out.features)


def build_args_of(state_dict: Dict[str, torch.Tensor]) -> BuildArgs:
    """The legacy path, for checkpoints without ``model_args`` (torchreid's engines, lfem_plugin before 0.2): the
    :class:`BuildArgs` read from the state dict's first classifier rows, SIE table rows and SIE camera ids. The
    plugin's engines store ``model_args`` (read by :meth:`BuildArgs.from_stored`)."""
    classifier = state_dict.get("heads.0.classifier.weight")
    table = state_dict.get("backbone.sie.table")
    camera_ids = state_dict.get("backbone.sie.camera_ids")
    return BuildArgs(classifier.shape[0] if classifier is not None else 1, table.shape[0] if table is not None else 0,
                     camera_ids.tolist() if camera_ids is not None else None)


def _check_choice(key: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not one of {choices}")


_BACKBONE_KEYS = ("img_size", "stride", "num_cameras", "camera_ids", "sie_coef", "drop_path_rate", "num_groups",
                  "rearrange", "shift_num", "shuffle_groups", "pretrained_path")


def create_lfem_vit(arch: str, num_classes: int, loss: str = "softmax", pretrained: bool = False,
                    use_gpu: bool = True, **kwargs: Any) -> LFEMViT:
    """The builder behind every registered variant (also used directly by the benchmarks); unknown keyword
    arguments are rejected.

    ``pretrained=True`` loads the architecture's ImageNet weights (downloaded to ``$TORCH_HOME`` where a network
    exists, else from ``pretrained_path``); architectures without ImageNet weights ignore it with a log line.
    ``use_gpu`` is accepted for torchreid's ``build_model`` contract; the caller moves the model.
    """
    backbone_kwargs = {k: kwargs.pop(k) for k in _BACKBONE_KEYS if k in kwargs}
    if pretrained and ARCHS[arch]["weights"] is None:
        _logger.info("%s has no ImageNet weights; pretrained=True ignored (random init)", arch)
        pretrained = False
    backbone = build_backbone(arch, pretrained=pretrained, jpm=True, **backbone_kwargs)
    try:
        return LFEMViT(num_classes, backbone, loss=loss, **kwargs)
    except TypeError as err:
        raise TypeError(f"unknown model option for {arch}: {err}") from None


def register_variant(name: str, arch: str, fixed: Tuple[str, ...] = (), training: Optional[dict] = None,
                     create: Callable[..., nn.Module] = create_lfem_vit, **model_args: Any) -> None:
    """Register ``name``: ``arch`` with ``model_args``. Through configs these settings replace the defaults of the
    keys that carry them, and ``fixed`` are the ones the name itself states (contradicting them is an error).
    ``training``: settings of the training recipe, not of the model; they reach only the config keys (a project's,
    :func:`lfem_plugin.config.extensions.register_keys`), never the builder. ``create``: the builder behind the name
    (``create(arch, num_classes, loss, pretrained, use_gpu, **model_args)``; a research project passes its own)."""
    def builder(num_classes: int, loss: str = "softmax", pretrained: bool = False, use_gpu: bool = True,
                **kwargs: Any) -> nn.Module:
        model = create(arch, num_classes, loss, pretrained, use_gpu, **dict(model_args, **kwargs))
        return with_build_spec(model, name, dict(model_args, **kwargs, num_classes=num_classes, loss=loss))
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"{name}: {arch} with {dict(model_args, **training or {})}."
    builder.arch = arch  # the backbone architecture (its weight source fixes the input normalisation)
    builder.settings = dict(model_args, **training or {})
    builder.fixed = tuple(fixed)
    MODELS.register(builder, name=name)


_variant = register_variant
_BASE_S11 = dict(img_size=(256, 128), stride=11, num_cameras=8, sie_coef=3.0)
_TINY = dict(img_size=(64, 32), stride=8, num_cameras=2, sie_coef=3.0, drop_path_rate=0.0)
_MINI = dict(img_size=(128, 64), stride=12, num_cameras=2, sie_coef=3.0, drop_path_rate=0.0)
BASE_S11, TINY = _BASE_S11, _TINY  # the geometries of the paper's ViT-B and of the tiny test ViT (projects reuse them)
_NAMED_GEOMETRY = ("img_size", "stride")  # names ending in _s<stride>_<H>x<W> state both

# The paper's model (ViT-B/16, stride 11, SIE 3.0, JPM + rearrange, LFEM, erase/crop views, 256x128).
_variant("lfem_vit", "vit_base_patch16", **_BASE_S11)
_variant("lfem_vit_base_patch16_s11_256x128", "vit_base_patch16", _NAMED_GEOMETRY, **_BASE_S11)
_variant("lfem_deit_base_patch16_s11_256x128", "deit_base_patch16", _NAMED_GEOMETRY, **_BASE_S11)
_variant("lfem_deit_small_patch16_s16_256x128", "deit_small_patch16", _NAMED_GEOMETRY, **dict(_BASE_S11, stride=16))
_variant("lfem_vit_tiny", "vit_tiny_test", **_TINY)
_variant("lfem_vit_mini", "vit_mini", **_MINI)  # 128-d, depth 4, stride 12 at 128x64 (lost the CUHK03 pilot)
# The paper's "Baseline (ViT)": TransReID (same backbone and JPM heads), no LFEM, one view, TransReID's eval feature.
_BASELINE = dict(use_lfem=False, num_views=1, local_feature="jpm", eval_feature="concat")
_variant("vit_transreid", "vit_base_patch16", ("use_lfem", "num_views"), **_BASE_S11, **_BASELINE)
_variant("vit_transreid_tiny", "vit_tiny_test", ("use_lfem", "num_views"), **_TINY, **_BASELINE)
_variant("vit_transreid_mini", "vit_mini", ("use_lfem", "num_views"), **_MINI, **_BASELINE)
