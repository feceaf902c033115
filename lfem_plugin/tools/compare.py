"""Train and evaluate models under one declared protocol; write one JSON per (model, seed); aggregate a report.

``lfem-reid compare`` and ``benchmarks/compare.py`` are the same entry point; ``lfem-reid demo`` is the quick
profile with one seed. Every model - the plugin's LFEM variants (paper Table 2) and torchreid's baselines (paper
Table 1: PCB, ResNet-50, OSNet, HACNN) - is trained by :func:`lfem_plugin.tools.train.run` (the plugin engine for
plugin models, torchreid's own engines for torchreid models) and evaluated by the same evaluation code.

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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..registry import MODELS
from .protocols import PAPER, PROFILES, QUICK, ModelSpec, Profile, configs_dir  # noqa: F401  (re-exported)
from .report import write_report

__all__ = ["ModelSpec", "Profile", "PROFILES", "QUICK", "PAPER", "configs_dir", "run_compare", "report", "run_one",
           "summary_text"]

_logger = logging.getLogger(__name__)


def _versions() -> Dict[str, str]:
    import timm

    from .. import _torchreid
    from ..version import __version__
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


def _skip_reason(spec: ModelSpec, profile: Profile, cfg, vit_weights: Optional[str]) -> Optional[str]:
    if spec.needs_cuda and not torch.cuda.is_available():
        return f"torchreid's {cfg.model.name} calls .cuda() in its forward pass; it needs a GPU"
    if profile.name == "paper" and cfg.model.pretrained:
        if cfg.model.name in MODELS and not vit_weights:
            return "ImageNet ViT-B/16 weights not given (--vit-weights jx_vit_base_p16_224-80ecf9dd.pth)"
        home = Path(torch.hub.get_dir()).parent
        missing = [str(home / w) for w in spec.weights if not (home / w).is_file()]
        if missing:
            return f"ImageNet weights not found at {missing[0]} (no download is attempted)"
    return None


def _config(spec: ModelSpec, profile: Profile, seed: int, out_dir: Path, root: str, extra: Sequence[str],
            vit_weights: Optional[str], benchmark: Optional[str] = None):
    from ..config import load_config
    config_file = profile.config_path(spec, benchmark)
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: the installation lacks the shipped configs; "
                                f"reinstall lfem_plugin")
    changes = {**profile.common, **spec.change_map, "train.seed": seed,
               "data.save_dir": str(out_dir / "runs" / f"{spec.key}_seed{seed}")}
    if root:
        changes["data.root"] = root
    if not torch.cuda.is_available():
        changes["use_gpu"] = False
    source = f"the {profile.name} profile's row {spec.key!r}"
    cfg = load_config(config_file, list(extra), changes=changes, changes_source=source)
    if vit_weights and cfg.model.name in MODELS:  # the model the loaded config builds: a plugin ViT takes ImageNet
        changes["model.pretrained_path"] = vit_weights  # ViT-B/16 weights (KEY VALUE overrides still win)
        cfg = load_config(config_file, list(extra), changes=changes, changes_source=source)
    return cfg


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
            benchmark: Optional[str] = None, fresh: bool = False) -> Dict[str, Any]:
    """Train + evaluate one model with one seed; the result JSON is written as soon as it is known. Its top-level
    metrics are the first target's; ``targets`` holds every target's. A row stopped mid-run resumes from its newest
    checkpoint unless ``fresh`` (``--force``)."""
    from . import train
    benchmark = benchmark or (profile.benchmarks[0] if profile.benchmarks else None)
    result: Dict[str, Any] = {"model": spec.key, "label": spec.label, "seed": seed,
                              "profile": profile.name, "protocol": profile.description, "device": _device(),
                              "versions": _versions(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if benchmark:
        result["benchmark"] = benchmark
    path = out_dir / f"{spec.key}_seed{seed}.json"
    try:
        cfg = _config(spec, profile, seed, out_dir, root, extra, vit_weights, benchmark)
        result.update(registered_name=cfg.model.name, config=cfg.dump())
        reason = _skip_reason(spec, profile, cfg, vit_weights)
        if reason:
            result.update(status="skipped", reason=reason)
        else:
            start = time.perf_counter()
            log = out_dir / "runs" / f"{spec.key}_seed{seed}" / "stdout.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as handle, contextlib.redirect_stdout(handle):  # torchreid prints its progress
                engine = train.run(cfg) if fresh else _train_or_resume(train, cfg)
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


def _train_or_resume(train, cfg):
    """Train the row, resuming from its newest checkpoint in its own run folder when an earlier call was stopped
    mid-row (rows that save checkpoints: ``train.checkpoint_period``); a row whose last checkpoint already ends the
    run (stopped during its final evaluation) is evaluated from that checkpoint."""
    from ..utils.checkpoint import latest_checkpoint
    engine = train.run(cfg, resume="auto")
    if engine is None:
        final = cfg.clone()
        final.defrost()
        final.test.evaluate = True
        final.freeze()
        engine = train.run(final, weights=str(latest_checkpoint(Path(cfg.data.save_dir) / "model")))
    return engine


def _check_row(spec: ModelSpec, profile: Profile, out_dir: Path, root: str, extra: Sequence[str],
               vit_weights: Optional[str], benchmark: Optional[str]) -> None:
    """The row's config loads and passes :func:`~lfem_plugin.tools.preflight.check_config`; its error names the row.
    Raises ``KeyError`` / ``ValueError`` (the CLI prints it and exits 2)."""
    from .train import check_run_config
    try:
        check_run_config(_config(spec, profile, 0, out_dir, root, extra, vit_weights, benchmark))
    except (KeyError, ValueError) as err:
        message = str(err.args[0]) if err.args else str(err)
        kind = KeyError if isinstance(err, KeyError) else ValueError
        raise kind(f"row {spec.key!r}: {message}; nothing was trained (the overrides apply to every row: choose the "
                   f"rows they fit with --models)") from err


def run_compare(profile: str = "quick", models: Optional[Sequence[str]] = None, seeds: Sequence[int] = (0,),
                out_dir: str | Path = "compare_out", root: str = "", extra: Sequence[str] = (),
                vit_weights: Optional[str] = None, force: bool = False,
                benchmark: Optional[str] = None) -> List[Dict[str, Any]]:
    """Run every (model, seed) not already finished in ``out_dir`` (``force`` re-runs); returns all results.
    Every selected row's config is loaded and checked first: one that fails (a bad key or value in ``extra``, or an
    override that row cannot take) raises before anything trains; a row that fails while training is recorded as
    ``failed`` and the others go on.
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
    for key in models or list(specs):  # a wrong key or value, or an override some row cannot take: stop before any
        _check_row(specs[key], prof, out_dir, root, extra, vit_weights, benchmark)  # training, not hours later
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
            results.append(run_one(specs[key], prof, seed, out_dir, root, extra, vit_weights, benchmark, force))
    return results


def report(out_dir: str | Path) -> Path:
    """Aggregate the JSONs in ``out_dir`` (models in the profiles' order) into ``results.md``, ``results.csv``,
    ``cmc.png`` and ``bars.png``: :func:`lfem_plugin.tools.report.write_report`."""
    return write_report(out_dir, [s.key for p in PROFILES.values() for s in p.models])


def summary_text(results: List[Dict[str, Any]]) -> str:
    """A short console table of one run."""
    width = max([16] + [len(r["label"]) for r in results])
    lines = [f"{'model':<{width}} {'R1':>6} {'mAP':>6}  note"]
    for r in results:
        if r["status"] == "ok":
            lines.append(f"{r['label']:<{width}} {r['R1']:6.1f} {r['mAP']:6.1f}  {r['wall_s']:.0f} s")
        else:
            lines.append(f"{r['label']:<{width}} {'-':>6} {'-':>6}  {r['status']}: {r.get('reason', '')[:70]}")
    return "\n".join(lines)

