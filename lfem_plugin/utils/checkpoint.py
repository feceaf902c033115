"""Checkpoints that resume a run exactly and are never lost: atomic, ``weights_only``-safe, finite, readable.

A checkpoint holds model, optimiser, scheduler, scaler, epoch, RNG states and the config, as tensors and plain
values only. It is written to a temporary file, fsynced and renamed, so a visible checkpoint is always complete;
one holding non-finite weights or optimiser state is refused, and a full disk leaves the previous one intact.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .atomic import DiskFullError, atomic_open
from .checkpoint_file import DamagedCheckpointError, named_tensors, verify_checkpoint_file
from .state_layout import strip_module_prefix, trained_state_dict

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "latest_checkpoint",
           "list_checkpoints", "load_state_strict", "non_finite_tensors", "newest_finite_checkpoint",
           "remove_orphan_tmp", "NonFiniteStateError", "DiskFullError", "strip_module_prefix", "load_trained_weights",
           "numpy_scalar_globals", "trained_size", "DamagedCheckpointError", "torch_load_reason",
           "report_partial_load"]

_logger = logging.getLogger(__name__)
PREFIX = "model.pth.tar-"


class NonFiniteStateError(RuntimeError):
    """Weights or optimiser state hold NaN/inf: the checkpoint is not written."""


def rng_state() -> Dict[str, Any]:
    """torch / CUDA / numpy / python RNG states, as tensors and plain Python values only."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def non_finite_tensors(obj: Any) -> List[str]:
    """Names of the floating-point tensors in a (nested) state that hold NaN or inf."""
    return [name for name, t in named_tensors(obj) if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_checkpoint(state: Dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` atomically (:func:`~lfem_plugin.utils.atomic.atomic_open`: temporary file, fsync, rename).

    Raises :class:`NonFiniteStateError` (nothing written) when ``state_dict`` or ``optimizer`` hold NaN/inf, and
    :class:`DiskFullError` naming the path and the bytes needed when the disk cannot hold it; in both cases the
    previous checkpoint is untouched and no temporary file is left.
    """
    path = Path(path)
    bad = non_finite_tensors({"state_dict": state.get("state_dict", {}), "optimizer": state.get("optimizer", {})})
    if bad:
        raise NonFiniteStateError(f"{len(bad)} weight/optimiser tensors hold NaN or inf (e.g. {', '.join(bad[:3])}); "
                                  f"{path} was not written")
    needed = sum(t.numel() * t.element_size() for _, t in named_tensors(state))
    with atomic_open(path, "wb", needed, "checkpoint", _FULL_ADVICE) as handle:
        torch.save(state, handle)
    return path


_FULL_ADVICE = "free some space (older checkpoints stay intact) and resume with --resume auto"


def load_checkpoint(path: str | os.PathLike, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file.

    The file is checked first (:func:`~lfem_plugin.utils.checkpoint_file.verify_checkpoint_file`: every zip
    member's CRC-32, the end record). A checkpoint with pickled objects is refused, except the numpy scalars
    torchreid's engines store (``rank1``), which are allow-listed.

    Raises:
        FileNotFoundError, IsADirectoryError: no such file, or a folder (naming its newest checkpoint).
        DamagedCheckpointError: (a ``ValueError``) empty, cut short, or a member with other bytes than written.
        RuntimeError: not readable with ``weights_only=True`` (pickled objects), naming what torch found.
    """
    path = Path(path)
    if path.is_dir():
        newest = latest_checkpoint(path) or latest_checkpoint(path / "model")
        hint = f" (the newest checkpoint in it is {newest})" if newest else ""
        raise IsADirectoryError(f"checkpoint {path} is a folder; pass a {PREFIX}<epoch> file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise DamagedCheckpointError(f"checkpoint {path} is empty (0 bytes): it was not written completely; use an "
                                     f"earlier checkpoint")
    torch.serialization.add_safe_globals(numpy_scalar_globals())  # a context manager would remove them on exit
    verify_checkpoint_file(path)  # CRC-32 of every member, end record: refuses damaged or truncated files
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise RuntimeError(f"refusing to load {path}: it is not a plain tensor checkpoint readable with "
                           f"torch.load(weights_only=True) ({torch_load_reason(err)}). Checkpoints with pickled "
                           f"Python objects could execute code; re-save it as a state dict in a trusted "
                           f"environment.") from err


def torch_load_reason(err: Exception) -> str:
    """The one sentence of a ``torch.load`` error that says what is wrong, whole (never cut mid-sentence)."""
    text = str(err).replace("\x1b[1m", "").replace("\x1b[0m", "")
    found = re.search(r"WeightsUnpickler error: (.+?\.)(?:\s|$)", text)
    if found:
        return found.group(1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else 'no message'}"


def numpy_scalar_globals() -> list:
    """What ``torch.save`` pickles for a numpy scalar (torchreid stores ``rank1`` as ``numpy.float32``)."""
    dtypes = [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64")]
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed the module
    return [core.multiarray.scalar, np.dtype, *dtypes]


def trained_size(state: Dict[str, Any]) -> Optional[tuple]:
    """``(height, width)`` a checkpoint was trained at, from its stored config (None: no config, or no size in it;
    a config stores every key, so its absence means the default 256x128 only for a config without ``data``)."""
    import yaml
    try:
        data = (yaml.safe_load(state.get("config") or "") or {}).get("data", {})
        return (int(data["height"]), int(data["width"]))
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError):
        return None


def load_state_strict(model: torch.nn.Module, state_dict: Dict[str, Any], source: str | os.PathLike,
                      target: str, trained_at: Optional[tuple] = None) -> None:
    """``load_state_dict`` that accepts a ``module.`` prefix, fast-reid's ``model`` wrapper and TransReID's key names
    (:func:`~lfem_plugin.utils.state_layout.trained_state_dict`) and raises a ``KeyError`` naming the missing and
    unexpected keys; a position embedding of another input size is resampled to the model's (``trained_at``: the
    checkpoint's ``(height, width)``; unknown, it is an error naming both token counts)."""
    from ..models.pretrained import resample_trained_pos_embed
    state_dict = resample_trained_pos_embed(trained_state_dict(state_dict), model, trained_at, str(source))
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = [f"{name} keys {keys[:10]}" for name, keys in (("missing", result.missing_keys),
                                                                  ("unexpected", result.unexpected_keys)) if keys]
        raise KeyError(f"{source} does not match {target}: {', '.join(parts)}. Is it a checkpoint of another model, "
                       f"the wrong --config-file, or a --set / KEY VALUE override that changes the model's "
                       f"layers (e.g. lfem.num_groups)?")


def load_trained_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """``model.load_weights``: torchreid's ``load_pretrained_weights`` (tensors whose name and shape match are
    loaded, the rest, e.g. a classifier of another identity count, is listed and left), read ``weights_only``.

    A file none of whose tensors fit but which looks like an ImageNet ViT is refused with the key to use instead.
    Reference: torchreid ``utils.torchtools.load_pretrained_weights``.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.load_weights {path} not found; give the path of a trained checkpoint")
    from ..models.pretrained import resample_trained_pos_embed
    state = load_checkpoint(path)
    weights = trained_state_dict(state)
    weights = resample_trained_pos_embed(weights, model, trained_size(state), f"model.load_weights {path}")
    own = model.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        hint = (f"it holds ImageNet backbone weights (e.g. {next(iter(weights))}), and model.load_weights means "
                f"trained weights of the whole model, as in torchreid: write model.pretrained_path {path} instead"
                if "patch_embed.proj.weight" in weights else "is it a checkpoint of another model?")
        raise ValueError(f"model.load_weights {path}: no tensor matches the model; {hint}")
    model.load_state_dict(matched, strict=False)
    report_partial_load(own, matched, weights, f"model.load_weights {path}")


def report_partial_load(own: Dict[str, torch.Tensor], matched: Dict[str, Any], weights: Dict[str, Any],
                        source: str) -> None:
    """Log what a partial load filled: INFO when only classifiers (their identity count is the data's) stayed at
    their initial values, else a WARNING naming the modules left at init and the share of parameters filled."""
    left = [k for k in own if k not in matched]
    unexpected = [k for k in left if ".classifier." not in f".{k}"]
    skipped = sorted(set(weights) - set(matched))
    filled = sum(own[k].numel() for k in matched) / max(1, sum(v.numel() for v in own.values()))
    text = (f"{source}: loaded {len(matched)} of {len(own)} tensors ({filled:.0%} of the values)"
            + (f"; in the file but not loaded (name or shape differ): {skipped[:10]}" if skipped else ""))
    if not unexpected:
        _logger.info("%s", text)
        return
    modules = sorted({".".join(k.split(".")[:3]) for k in unexpected})
    _logger.warning("%s; %d tensors stayed at their initial values: %s. Is it a checkpoint of another model or "
                    "layout? (Classifiers of another identity count are expected to stay.)", text, len(unexpected),
                    ", ".join(modules[:12]) + (f" and {len(modules) - 12} more" if len(modules) > 12 else ""))


def list_checkpoints(folder: str | os.PathLike) -> List[tuple]:
    """``(epoch, path)`` of the ``model.pth.tar-<epoch>`` files in ``folder``, oldest first."""
    found = []
    for path in Path(folder).glob(PREFIX + "*"):
        suffix = path.name[len(PREFIX):]
        if suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found)


def latest_checkpoint(folder: str | os.PathLike) -> Optional[Path]:
    """The newest ``model.pth.tar-<epoch>`` in ``folder`` (by epoch), or None."""
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def newest_finite_checkpoint(folder: str | os.PathLike) -> Optional[Path]:
    """The newest checkpoint in ``folder`` that loads and whose weights and optimiser state are finite."""
    for _, path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path)
        except (OSError, ValueError, RuntimeError):
            continue
        if not non_finite_tensors({"s": state.get("state_dict", {}), "o": state.get("optimizer", {})}):
            return path
    return None


def remove_orphan_tmp(folder: str | os.PathLike) -> int:
    """Delete the temporary files a killed save left in ``folder``; returns how many."""
    orphans = list(Path(folder).glob(f".{PREFIX}*.tmp"))
    for path in orphans:
        path.unlink(missing_ok=True)
    if orphans:
        _logger.warning("removed %d unfinished checkpoint file(s) left by an interrupted save in %s", len(orphans),
                        folder)
    return len(orphans)
