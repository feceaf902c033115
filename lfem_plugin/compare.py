"""Train and evaluate models under one declared protocol; write one JSON per (model, seed); aggregate a report.

``lfem-reid compare`` and ``benchmarks/compare.py`` are the same entry point; ``lfem-reid demo`` is the quick
profile with one seed. Every model - the plugin's LFEM variants (paper Table 2) and torchreid's baselines (paper
Table 1: PCB, ResNet-50, OSNet, HACNN) - is trained by :func:`lfem_plugin.train.run` (the plugin engine for plugin
models, torchreid's own engines for torchreid models) and evaluated by the same evaluation code.

Reference: LFEM paper Tables 1-2 (Sec. 4.3-4.4).
"""
from __future__ import annotations

import contextlib
import json
import logging
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .report import write_report

__all__ = ["ModelSpec", "Profile", "PROFILES", "VISIBILITY", "run_compare", "report", "run_one"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: a registered model name plus its config overrides."""

    key: str
    label: str
    model: str
    opts: Tuple[str, ...] = ()
    needs_cuda: bool = False  # the torchreid model calls .cuda() itself
    weights: Tuple[str, ...] = ()  # files (under $TORCH_HOME) that must exist when pretrained
    config_file: Optional[str] = None  # under configs/; default: the profile's


@dataclass(frozen=True)
class Profile:
    """A declared protocol: one dataset, split, input size and evaluation code for every model.

    A profile with ``benchmarks`` runs on any of them: its config files are named under the first benchmark's
    folder (``occluded_duke/...``) and the same file names are read from ``configs/<benchmark>/`` for another.
    """

    name: str
    description: str
    common: Tuple[str, ...]
    models: Tuple[ModelSpec, ...]
    config_file: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    benchmarks: Tuple[str, ...] = ()

    def config_path(self, spec: ModelSpec, benchmark: Optional[str] = None) -> Optional[Path]:
        """The config file of ``spec`` on ``benchmark`` (default: the profile's first)."""
        name = spec.config_file or self.config_file
        if name is None:
            return None
        if benchmark and self.benchmarks:
            if benchmark not in self.benchmarks:
                raise KeyError(f"unknown benchmark {benchmark!r} for profile {self.name!r}; choices: "
                               f"{list(self.benchmarks)}")
            name = f"{benchmark}/{Path(name).name}"
        return configs_dir() / name


def configs_dir() -> Path:
    """The shipped configs: ``lfem_plugin/configs`` in an installed wheel, ``configs/`` in a source checkout."""
    inside = Path(__file__).resolve().parent / "configs"
    return inside if inside.is_dir() else Path(__file__).resolve().parents[1] / "configs"


def _opts(**kwargs: Any) -> Tuple[str, ...]:
    out: List[str] = []
    for key, value in kwargs.items():
        out += [key.replace("__", "."), str(value)]
    return tuple(out)


# ---- quick profile: ORL faces with occluded queries, random init; the recipes are configs/orl/quick_*.yaml --------
_QUICK_VIT = "orl/quick_vit_tiny_96x80.yaml"
_QUICK_CNN = "orl/quick_cnn_softmax_96x80.yaml"
_BASELINE_VIT = _opts(model__name="vit_transreid_tiny", lfem__use_lfem=False, lfem__views="['original']",
                      lfem__local_feature="jpm", lfem__eval_feature="concat", lfem__loss_weights="transreid")

LFEM_VARIANTS = ("baseline_vit", "lfem_only", "rerc_only", "full")

QUICK = Profile(
    name="quick",
    description="orl_faces_occluded (20 train ids; 40 occluded queries vs 160 gallery), 96x80 input, random "
                "init; LFEM variants: tiny ViT (64-d, depth 3, stride 16), AdamW 1e-3, 100 epochs; CNN baselines: "
                "torchreid softmax recipe (Adam 3e-4, label smoothing), 15 epochs",
    common=(),
    models=(
        ModelSpec("baseline_vit", "Baseline (ViT)", "vit_transreid_tiny", _BASELINE_VIT, config_file=_QUICK_VIT),
        ModelSpec("lfem_only", "LFEM only", "lfem_vit_tiny", _opts(lfem__views="['original']"),
                  config_file=_QUICK_VIT),
        ModelSpec("rerc_only", "RE&RC only", "lfem_vit_tiny", _opts(lfem__use_lfem=False, lfem__local_feature="jpm"),
                  config_file=_QUICK_VIT),
        ModelSpec("full", "Full (LFEM)", "lfem_vit_tiny", (), config_file=_QUICK_VIT),
        ModelSpec("resnet50", "ResNet-50", "resnet50", _opts(model__name="resnet50"), config_file=_QUICK_CNN),
        ModelSpec("pcb_p6", "PCB", "pcb_p6", _opts(model__name="pcb_p6"), config_file=_QUICK_CNN),
        ModelSpec("osnet_x1_0", "OSNet", "osnet_x1_0",
                  _opts(model__name="osnet_x1_0", train__optim="amsgrad", train__lr=0.0015), config_file=_QUICK_CNN),
        ModelSpec("hacnn", "HACNN", "hacnn", _opts(model__name="hacnn", data__height=160, data__width=64),
                  needs_cuda=True, config_file=_QUICK_CNN),
    ),
)

# ---- paper profile: GPU, Occluded-Duke, the paper's recipe / each baseline's standard torchreid recipe ----------
_PAPER_CNN = "occluded_duke/cnn_softmax_256x128.yaml"
PAPER = Profile(
    name="paper",
    description="GPU, 256x128; LFEM models: the paper's recipe (configs/<benchmark>/lfem_vit_base_s11_256x128.yaml, "
                "ImageNet ViT-B/16 from --vit-weights); baselines: torchreid's softmax recipes "
                "(configs/<benchmark>/cnn_softmax_256x128.yaml) with ImageNet weights from $TORCH_HOME (skipped when "
                "absent)",
    common=(),  # datasets: each benchmark's config files
    config_file="occluded_duke/lfem_vit_base_s11_256x128.yaml",
    benchmarks=("occluded_duke", "market1501", "p_dukemtmc_reid", "dukemtmcreid", "msmt17"),
    models=(
        ModelSpec("baseline_vit", "Baseline (ViT)", "lfem_vit",
                  _opts(lfem__use_lfem=False, lfem__views="['original']", lfem__local_feature="jpm")),
        ModelSpec("lfem_only", "LFEM only", "lfem_vit", _opts(lfem__views="['original']")),
        ModelSpec("rerc_only", "RE&RC only", "lfem_vit", _opts(lfem__use_lfem=False, lfem__local_feature="jpm")),
        ModelSpec("full", "Full (LFEM)", "lfem_vit", ()),
        ModelSpec("resnet50", "ResNet-50", "resnet50", _opts(model__name="resnet50"),
                  weights=("hub/checkpoints/resnet50-19c8e357.pth",), config_file=_PAPER_CNN),
        ModelSpec("pcb_p6", "PCB", "pcb_p6", _opts(model__name="pcb_p6", data__height=384, data__width=128,
                                                 train__optim="sgd", train__lr=0.05),
                  weights=("hub/checkpoints/resnet50-19c8e357.pth",), config_file=_PAPER_CNN),
        ModelSpec("osnet_x1_0", "OSNet", "osnet_x1_0",
                  _opts(model__name="osnet_x1_0", train__optim="amsgrad", train__lr=0.0015, train__max_epoch=150,
                        train__batch_size=64),
                  weights=("checkpoints/osnet_x1_0_imagenet.pth",), config_file=_PAPER_CNN),
        ModelSpec("hacnn", "HACNN", "hacnn", _opts(model__name="hacnn", data__height=160, data__width=64,
                                                 train__max_epoch=150), needs_cuda=True, config_file=_PAPER_CNN),
    ),
)
# ---- visibility profile (issue 25, prepared, not yet run): the visibility-aware LFEM's parts, one row each, on the
# quick profile's ORL occluded proxy and ViT recipe; run with --seeds 0 1 2. Settings are to be chosen on a
# validation split of the training identities, never on the test queries.
_VIS_ROWS = (("paper_full", "Full (paper)", ()),
             ("plus_supervision", "+gate supervision", _opts(lfem__gate_supervision=1.0)),
             ("plus_paste", "+pasted occluders", _opts(lfem__occluder="paste")),
             ("plus_stripes", "+stripes", _opts(lfem__rearrange=False)),
             ("plus_local_gate", "+whole-local gating", _opts(lfem__gate_scope="local")),
             ("vis_all", "All (lfem_vit_vis)", _opts(model__name="lfem_vit_vis_tiny")))
VISIBILITY = Profile(
    name="visibility",
    description=QUICK.description.split("; CNN")[0] + "; the paper's Full model and each visibility part on top of "
                "it (gate supervision 1.0, pasted occluders, stripes, whole-local gating), then all of them",
    common=(),
    models=tuple(ModelSpec(key, label, "lfem_vit_vis_tiny" if key == "vis_all" else "lfem_vit_tiny", opts,
                           config_file=_QUICK_VIT) for key, label, opts in _VIS_ROWS),
)
PROFILES = {"quick": QUICK, "paper": PAPER, "visibility": VISIBILITY}


def _versions() -> Dict[str, str]:
    import timm

    from . import __version__, _torchreid
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {"torch": torch.__version__, "timm": timm.__version__, "lfem_plugin": __version__,
            "torchreid": _torchreid.version(), "git": rev or "unknown"}


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _skip_reason(spec: ModelSpec, profile: Profile, pretrained: bool, vit_weights: Optional[str]) -> Optional[str]:
    if spec.needs_cuda and not torch.cuda.is_available():
        return f"torchreid's {spec.model} calls .cuda() in its forward pass; it needs a GPU"
    if profile.name == "paper" and pretrained:
        if spec.model.startswith(("lfem_vit", "vit_transreid")) and not vit_weights:
            return "ImageNet ViT-B/16 weights not given (--vit-weights jx_vit_base_p16_224-80ecf9dd.pth)"
        home = Path(torch.hub.get_dir()).parent
        missing = [str(home / w) for w in spec.weights if not (home / w).is_file()]
        if missing:
            return f"ImageNet weights not found at {missing[0]} (no download is attempted)"
    return None


def _config(spec: ModelSpec, profile: Profile, seed: int, out_dir: Path, root: str, extra: Sequence[str],
            vit_weights: Optional[str], benchmark: Optional[str] = None):
    from .config import load_config
    config_file = profile.config_path(spec, benchmark)
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} not found: the installation lacks the shipped configs; "
                                    f"reinstall lfem_plugin")
    opts = list(profile.common) + list(spec.opts) + ["train.seed", str(seed), "data.save_dir",
                                                     str(out_dir / "runs" / f"{spec.key}_seed{seed}")]
    if root:
        opts += ["data.root", root]
    if vit_weights and spec.model.startswith(("lfem_vit", "vit_transreid")):
        opts += ["model.pretrained_path", vit_weights]
    if not torch.cuda.is_available():
        opts += ["use_gpu", "False"]
    return load_config(config_file, opts + list(extra))


def _target_metrics(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """One target's entry of a result: R1/R5/R10/mAP in %, the CMC to rank 20, evaluation time, SIE mode."""
    cmc = metrics["cmc"]
    out = dict(R1=100 * cmc[0], R5=100 * cmc[min(4, len(cmc) - 1)], R10=100 * cmc[min(9, len(cmc) - 1)],
               mAP=100 * metrics["mAP"], cmc=cmc[:20], eval_s=metrics["eval_s"])
    if "sie" in metrics:
        out["sie"] = metrics["sie"]
    return out


def run_one(spec: ModelSpec, profile: Profile, seed: int, out_dir: Path, root: str = "",
            extra: Sequence[str] = (), vit_weights: Optional[str] = None,
            benchmark: Optional[str] = None) -> Dict[str, Any]:
    """Train + evaluate one model with one seed; the result JSON is written as soon as it is known. Its top-level
    metrics are the first target's; ``targets`` holds every target's."""
    from . import train
    benchmark = benchmark or (profile.benchmarks[0] if profile.benchmarks else None)
    result: Dict[str, Any] = {"model": spec.key, "label": spec.label, "registered_name": spec.model, "seed": seed,
                              "profile": profile.name, "protocol": profile.description, "device": _device(),
                              "versions": _versions(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if benchmark:
        result["benchmark"] = benchmark
    path = out_dir / f"{spec.key}_seed{seed}.json"
    try:
        cfg = _config(spec, profile, seed, out_dir, root, extra, vit_weights, benchmark)
        result["config"] = cfg.dump()
        reason = _skip_reason(spec, profile, cfg.model.pretrained, vit_weights)
        if reason:
            result.update(status="skipped", reason=reason)
        else:
            start = time.perf_counter()
            log = out_dir / "runs" / f"{spec.key}_seed{seed}" / "stdout.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as handle, contextlib.redirect_stdout(handle):  # torchreid prints its progress
                engine = train.run(cfg)
            targets = {name: _target_metrics(m) for name, m in engine.last_results.items()}
            first = {k: v for k, v in targets[list(cfg.data.targets)[0]].items() if k != "sie"}
            result.update(status="ok", **first, targets=targets, epochs=cfg.train.max_epoch,
                          train_images_per_s=float(np.mean(engine.train_images_per_s or [0.0])),
                          params=sum(p.numel() for p in engine.model.parameters()),
                          wall_s=time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - one failing model must not stop the comparison
        _logger.exception("%s (seed %d) failed", spec.key, seed)
        result.update(status="failed", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    return result


def run_compare(profile: str = "quick", models: Optional[Sequence[str]] = None, seeds: Sequence[int] = (0,),
                out_dir: str | Path = "compare_out", root: str = "", extra: Sequence[str] = (),
                vit_weights: Optional[str] = None, force: bool = False,
                benchmark: Optional[str] = None) -> List[Dict[str, Any]]:
    """Run every (model, seed) not already finished in ``out_dir`` (``force`` re-runs); returns all results.
    ``benchmark``: one of the profile's ``benchmarks`` (paper: occluded_duke, market1501, ...; default the first)."""
    prof = PROFILES[profile]
    if benchmark and benchmark not in prof.benchmarks:
        if not prof.benchmarks:
            raise KeyError(f"--benchmark {benchmark}: profile {profile!r} runs on its own dataset only; use --profile "
                           f"paper --benchmark {benchmark}")
        raise KeyError(f"--benchmark {benchmark}: profile {profile!r} runs on {', '.join(prof.benchmarks)} (the "
                       f"folders of configs/); choose one of them")
    benchmark = benchmark or (prof.benchmarks[0] if prof.benchmarks else None)
    specs = {s.key: s for s in prof.models}
    unknown = [m for m in models or () if m not in specs]
    if unknown:
        raise KeyError(f"unknown models {unknown} for profile {profile!r}; choices: {list(specs)}")
    out_dir = Path(out_dir)
    results = []
    for key in models or list(specs):
        for seed in seeds:
            path = out_dir / f"{key}_seed{seed}.json"
            if path.is_file() and not force:
                previous = json.loads(path.read_text())
                have = previous.get("benchmark", prof.benchmarks[0] if prof.benchmarks else None)  # older JSONs
                if have != benchmark:
                    raise FileExistsError(f"{path} holds a result on {have}, not {benchmark}; give each benchmark "
                                          f"its own --out folder")
                if previous.get("status") in ("ok", "skipped"):
                    _logger.info("%s seed %d: already done (%s)", key, seed, path)
                    results.append(previous)
                    continue
            _logger.info("%s seed %d: training", key, seed)
            results.append(run_one(specs[key], prof, seed, out_dir, root, extra, vit_weights, benchmark))
    return results


def report(out_dir: str | Path) -> Path:
    """Aggregate the JSONs in ``out_dir`` (models in the profiles' order) into ``results.md``, ``results.csv``,
    ``cmc.png`` and ``bars.png``: :func:`lfem_plugin.report.write_report`."""
    return write_report(out_dir, [s.key for p in PROFILES.values() for s in p.models])


def summary_text(results: List[Dict[str, Any]]) -> str:
    """A short console table of one run."""
    lines = [f"{'model':<16} {'R1':>6} {'mAP':>6}  note"]
    for r in results:
        if r["status"] == "ok":
            lines.append(f"{r['label']:<16} {r['R1']:6.1f} {r['mAP']:6.1f}  {r['wall_s']:.0f} s")
        else:
            lines.append(f"{r['label']:<16} {'-':>6} {'-':>6}  {r['status']}: {r.get('reason', '')[:70]}")
    return "\n".join(lines)

