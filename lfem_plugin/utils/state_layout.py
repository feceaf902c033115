"""Other programs' checkpoint layouts, read as the plugin's: wrappers, ``module.``, TransReID's key names.

* Wrappers: fast-reid, timm and DeiT save ``{"model": state_dict, ...}``; torchreid and the plugin
  ``{"state_dict": ...}``; DataParallel/DDP prefix every key with ``module.``.
* TransReID (``model/make_model.py``, ``build_transformer_local``) names the same tensors ``base.*`` (the ViT;
  its last block, final norm and ``fc`` are unused with JPM), ``b1.0`` / ``b1.1`` (global branch: block, norm),
  ``b2.*`` (local branch), ``bottleneck`` / ``bottleneck_N`` (the BNNecks) and ``classifier`` / ``classifier_N``.
  :func:`from_transreid_layout` renames them to the plugin's ``backbone.*`` / ``heads.N.*``, so a TransReID
  checkpoint loads as the same model and gives the same features.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping

__all__ = ["strip_module_prefix", "unwrap_state_dict", "is_transreid_layout", "from_transreid_layout",
           "trained_state_dict"]

_BRANCHES = {"b1": "global_branch", "b2": "local_branch"}
_PARTS = {"0": "block", "1": "norm"}


def strip_module_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Keys without the ``module.`` prefix that DataParallel/DDP add (only when every key has it)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def unwrap_state_dict(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The tensors of a checkpoint: inside ``model`` (fast-reid, timm, DeiT) and/or ``state_dict`` (torchreid, the
    plugin) when those hold mappings, without a ``module.`` prefix."""
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), Mapping):
            state = state[key]
    return strip_module_prefix(dict(state))


def is_transreid_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether the keys are TransReID's (``base.*`` plus ``bottleneck``/``classifier`` or ``b1.*``)."""
    keys = list(state_dict)
    return any(k.startswith("base.") for k in keys) and any(
        k.startswith(("b1.", "bottleneck.", "classifier.")) for k in keys)


def _rename(key: str, last_block: int, jpm: bool) -> str | None:
    """The plugin's name for a TransReID key; None for tensors TransReID keeps but never uses."""
    if key.startswith("base."):
        rest = key[len("base."):]
        if rest.startswith("fc.") or (jpm and (rest.startswith("norm.") or rest.startswith(f"blocks.{last_block}."))):
            return None
        return "backbone." + ("sie.table" if rest == "sie_embed" else rest)
    found = re.match(r"(b1|b2)\.([01])\.(.+)", key)
    if found:
        return f"backbone.jpm.{_BRANCHES[found.group(1)]}.{_PARTS[found.group(2)]}.{found.group(3)}"
    found = re.match(r"(bottleneck|classifier)(?:_(\d+))?\.(.+)", key)
    if found:
        part = "bn" if found.group(1) == "bottleneck" else "classifier"
        return f"heads.{found.group(2) or 0}.{part}.{found.group(3)}"
    return key


def from_transreid_layout(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """TransReID's keys renamed to the plugin's (other keys unchanged; a dict already in the plugin's layout is
    returned as is). With JPM (``b1.*`` present) the base's last block, ``base.norm`` and ``base.fc`` are dropped:
    TransReID copies them into ``b1``/``b2`` and never runs them."""
    if not is_transreid_layout(state_dict):
        return dict(state_dict)
    jpm = any(k.startswith("b1.") for k in state_dict)
    blocks = [int(m.group(1)) for m in (re.match(r"base\.blocks\.(\d+)\.", k) for k in state_dict) if m]
    last = max(blocks, default=-1)
    out = {}
    for key, value in state_dict.items():
        name = _rename(key, last, jpm)
        if name is not None:
            out[name] = value
    return out


def trained_state_dict(state: Mapping[str, Any]) -> Dict[str, Any]:
    """A trained checkpoint's tensors in the plugin's layout, whatever wrote it (the plugin, torchreid, fast-reid's
    wrapper, TransReID, DataParallel)."""
    return from_transreid_layout(unwrap_state_dict(state))
