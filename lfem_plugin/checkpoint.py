"""Atomic, ``weights_only``-safe checkpoints that resume a run exactly (model, optimiser, scheduler, scaler, RNG)."""
from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "latest_checkpoint", "load_state_strict"]

_logger = logging.getLogger(__name__)


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


def save_checkpoint(state: Dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to a temporary file in the same folder, fsync, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Optional[str] = "cpu") -> Dict[str, Any]:
    """``torch.load(weights_only=True)``; a checkpoint with pickled objects is refused with a message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise RuntimeError(f"refusing to load {path}: it is not a plain tensor checkpoint readable with "
                           f"torch.load(weights_only=True) ({type(err).__name__}: {str(err)[:200]}). Checkpoints "
                           f"with pickled Python objects could execute code; re-save it as a state dict in a "
                           f"trusted environment.") from err


def load_state_strict(model: torch.nn.Module, state_dict: Dict[str, Any], source: str | os.PathLike,
                      target: str) -> None:
    """``load_state_dict`` that raises a ``KeyError`` naming the missing and unexpected keys."""
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(f"{source} does not match {target}: missing keys {result.missing_keys[:10]}, unexpected "
                       f"keys {result.unexpected_keys[:10]}. Is it a checkpoint of another model, or the wrong "
                       f"--config-file?")


def latest_checkpoint(folder: str | os.PathLike) -> Optional[Path]:
    """The newest ``model.pth.tar-<epoch>`` in ``folder`` (by epoch), or None."""
    found = []
    for path in Path(folder).glob("model.pth.tar-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if suffix.isdigit():
            found.append((int(suffix), path))
    return max(found)[1] if found else None
