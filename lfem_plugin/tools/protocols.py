"""The comparison protocols: each profile is one dataset, split, input size and evaluation for every model, and each
row is a shipped config plus the keys it changes.

Reference: LFEM paper Tables 1-2 (Sec. 4.3-4.4).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["ModelSpec", "Profile", "PROFILES", "QUICK", "PAPER", "PEDESTRIANS", "LFEM_VARIANTS", "configs_dir",
           "register_profile", "QUICK_VIT_CONFIG", "PEDESTRIANS_LFEM_CONFIG"]


def configs_dir() -> Path:
    """The shipped configs: ``lfem_plugin/configs`` in an installed wheel, ``configs/`` in a source checkout."""
    inside = Path(__file__).resolve().parents[1] / "configs"
    return inside if inside.is_dir() else Path(__file__).resolve().parents[2] / "configs"


def _frozen(value: Any) -> Any:
    """A YAML value that hashes: lists become tuples (all the way down)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _thawed(value: Any) -> Any:
    """A value of :func:`_frozen` as YAML gives it: tuples become lists."""
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ModelSpec:
    """One row of a comparison: a shipped config (under ``configs/``) plus the keys it changes. Hashable and
    picklable (rows go to worker processes and into sets).

    Reference: fast-reid's ``configs/`` (a shipped YAML per recipe plus command-line changes).

    Args:
        key: the row's name on the command line and in result files.
        label: the row's name in tables.
        config_file: the config, relative to ``configs/`` (a profile with benchmarks reads the same file name from
            each benchmark's folder).
        changes: config key -> value (typed, as in a YAML file), applied over the config; stored as a sorted tuple
            of ``(key, value)`` pairs (lists as tuples); :attr:`change_map` reads them as a mapping.
        needs_cuda: the model calls ``.cuda()`` itself (torchreid's HACNN): skipped without a GPU.
        weights: files under ``$TORCH_HOME`` that must exist when the config asks for ImageNet weights.
    """

    key: str
    label: str
    config_file: str
    changes: Tuple[Tuple[str, Any], ...] = ()
    needs_cuda: bool = False
    weights: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        items = self.changes.items() if isinstance(self.changes, Mapping) else self.changes
        object.__setattr__(self, "changes", tuple(sorted((str(k), _frozen(v)) for k, v in items)))

    @property
    def change_map(self) -> Mapping[str, Any]:
        """The changes as a read-only mapping, config key -> value as YAML gives it (lists as lists)."""
        return MappingProxyType({key: _thawed(value) for key, value in self.changes})

    @property
    def model(self) -> str:
        """The registered name the row trains: ``model.name`` of its config (defaults, file, then its changes)."""
        from ..config import load_config
        return load_config(configs_dir() / self.config_file, changes=self.change_map).model.name


@dataclass(frozen=True)
class Profile:
    """A declared protocol: one dataset, split, input size and evaluation code for every model.

    A profile with ``benchmarks`` runs on any of them: its rows name config files under the first benchmark's folder
    (``occluded_duke/...``) and the same file names are read from ``configs/<benchmark>/`` for another.
    ``common``: config key -> value changed for every row.
    """

    name: str
    description: str
    common: Mapping[str, Any]
    models: Tuple[ModelSpec, ...]
    extra: Dict[str, Any] = field(default_factory=dict)
    benchmarks: Tuple[str, ...] = ()

    def config_path(self, spec: ModelSpec, benchmark: Optional[str] = None) -> Path:
        """The config file of ``spec`` on ``benchmark`` (default: the profile's first)."""
        name = spec.config_file
        if benchmark and self.benchmarks:
            if benchmark not in self.benchmarks:
                raise KeyError(f"unknown benchmark {benchmark!r} for profile {self.name!r}; choices: "
                               f"{list(self.benchmarks)}")
            name = f"{benchmark}/{Path(name).name}"
        return configs_dir() / name


# ---- quick profile: ORL faces with occluded queries, random init; the recipes are configs/orl/quick_*.yaml --------
QUICK_VIT_CONFIG = _QUICK_VIT = "orl/quick_vit_tiny_96x80.yaml"  # the quick profile's ViT recipe (rows of projects too)
_QUICK_CNN = "orl/quick_cnn_softmax_96x80.yaml"

LFEM_VARIANTS = ("baseline_vit", "lfem_only", "rerc_only", "full")

QUICK = Profile(
    name="quick",
    description="orl_faces_occluded (20 train ids; 40 occluded queries vs 160 gallery), 96x80 input, random "
                "init; LFEM variants: tiny ViT (64-d, depth 3, stride 16), AdamW 1e-3, 100 epochs; CNN baselines: "
                "torchreid softmax recipe (Adam 3e-4, label smoothing), 15 epochs",
    common={},
    models=(
        ModelSpec("baseline_vit", "Baseline (ViT)", _QUICK_VIT, {
            "model.name": "vit_transreid_tiny", "lfem.use_lfem": False, "lfem.views": ["original"],
            "lfem.local_feature": "jpm", "lfem.eval_feature": "concat", "lfem.loss_weights": "transreid"}),
        ModelSpec("lfem_only", "LFEM only", _QUICK_VIT, {"lfem.views": ["original"]}),
        ModelSpec("rerc_only", "RE&RC only", _QUICK_VIT, {"lfem.use_lfem": False, "lfem.local_feature": "jpm"}),
        ModelSpec("full", "Full (LFEM)", _QUICK_VIT),
        ModelSpec("resnet50", "ResNet-50", _QUICK_CNN, {"model.name": "resnet50"}),
        ModelSpec("pcb_p6", "PCB", _QUICK_CNN, {"model.name": "pcb_p6"}),
        ModelSpec("osnet_x1_0", "OSNet", _QUICK_CNN,
                  {"model.name": "osnet_x1_0", "train.optim": "amsgrad", "train.lr": 0.0015}),
        ModelSpec("hacnn", "HACNN", _QUICK_CNN, {"model.name": "hacnn", "data.height": 160, "data.width": 64},
                  needs_cuda=True),
    ),
)

# ---- paper profile: GPU, Occluded-Duke, the paper's recipe / each baseline's standard torchreid recipe ----------
_PAPER_LFEM = "occluded_duke/lfem_vit_base_s11_256x128.yaml"
_PAPER_CNN = "occluded_duke/cnn_softmax_256x128.yaml"
_RESNET50_WEIGHTS = ("hub/checkpoints/resnet50-19c8e357.pth",)
PAPER = Profile(
    name="paper",
    description="GPU, 256x128; LFEM models: the paper's recipe (configs/<benchmark>/lfem_vit_base_s11_256x128.yaml, "
                "ImageNet ViT-B/16 from --vit-weights); baselines: torchreid's softmax recipes "
                "(configs/<benchmark>/cnn_softmax_256x128.yaml) with ImageNet weights from $TORCH_HOME (skipped when "
                "absent)",
    common={},  # datasets: each benchmark's config files
    benchmarks=("occluded_duke", "market1501", "p_dukemtmc_reid", "dukemtmcreid", "msmt17"),
    models=(
        ModelSpec("baseline_vit", "Baseline (ViT)", "occluded_duke/vit_transreid_base_s11_256x128.yaml"),
        ModelSpec("lfem_only", "LFEM only", _PAPER_LFEM, {"lfem.views": ["original"]}),
        ModelSpec("rerc_only", "RE&RC only", _PAPER_LFEM, {"lfem.use_lfem": False, "lfem.local_feature": "jpm"}),
        ModelSpec("full", "Full (LFEM)", _PAPER_LFEM),
        ModelSpec("resnet50", "ResNet-50", _PAPER_CNN, {"model.name": "resnet50"}, weights=_RESNET50_WEIGHTS),
        ModelSpec("pcb_p6", "PCB", _PAPER_CNN, {"model.name": "pcb_p6", "data.height": 384, "data.width": 128,
                                                 "train.optim": "sgd", "train.lr": 0.05}, weights=_RESNET50_WEIGHTS),
        ModelSpec("osnet_x1_0", "OSNet", _PAPER_CNN,
                  {"model.name": "osnet_x1_0", "train.optim": "amsgrad", "train.lr": 0.0015, "train.max_epoch": 150,
                   "train.batch_size": 64}, weights=("checkpoints/osnet_x1_0_imagenet.pth",)),
        ModelSpec("hacnn", "HACNN", _PAPER_CNN, {"model.name": "hacnn", "data.height": 160, "data.width": 64,
                                                 "train.max_epoch": 150}, needs_cuda=True),
    ),
)
# ---- pedestrians profile: CUHK03 camera pair 1 (a Market-layout folder), clean and occluded queries, CPU ---------
PEDESTRIANS_LFEM_CONFIG = _PED_LFEM = "cuhk03_pair1/lfem_vit_tiny_s12_128x64.yaml"
PEDESTRIANS = Profile(
    name="pedestrians",
    description="CUHK03 camera pair 1 at 128x64 (folder cuhk03_pair1_128x64 under --root: 743 train ids; 100 test "
                "ids, clean queries = market_layout, occluded = market_layout_occluded, one gallery), random init, "
                "CPU; ViT rows: lfem_vit_tiny (64-d, depth 3, stride 12), AdamW 1e-3, 15 epochs unless "
                "train.max_epoch says (each row JSON: epochs); CNN: osnet_x0_25, torchreid softmax recipe "
                "(configs/cuhk03_pair1/)",
    common={},
    models=(
        ModelSpec("baseline_vit", "Baseline (ViT)", "cuhk03_pair1/vit_transreid_tiny_s12_128x64.yaml"),
        ModelSpec("lfem_only", "LFEM only", _PED_LFEM, {"lfem.views": ["original"]}),
        ModelSpec("rerc_only", "RE&RC only", _PED_LFEM, {"lfem.use_lfem": False, "lfem.local_feature": "jpm"}),
        ModelSpec("full", "Full (LFEM)", _PED_LFEM),
        ModelSpec("osnet_x0_25", "OSNet x0.25", "cuhk03_pair1/cnn_softmax_128x64.yaml"),
    ),
)

PROFILES: Dict[str, Profile] = {"quick": QUICK, "paper": PAPER, "pedestrians": PEDESTRIANS}


def register_profile(profile: Profile) -> None:
    """A research project's comparison profile (``lfem-reid compare --profile NAME``). Idempotent for an equal
    profile; raises ``ValueError`` when another profile already has the name."""
    known = PROFILES.get(profile.name)
    if known is not None and known != profile:
        raise ValueError(f"a different comparison profile is already registered as {profile.name!r}")
    PROFILES[profile.name] = profile
