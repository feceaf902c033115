"""Options that take a list (``-s A B``, ``-t C``, ``compare --models``/``--seeds``) stop at the first config key:
argparse's ``nargs='+'`` would swallow the ``KEY VALUE`` overrides that follow them (``-s NAME data.root X``: "Invalid
dataset name 'data.root'"); those items are handed back to the overrides, in order."""
from __future__ import annotations

import argparse
from typing import List, Sequence

__all__ = ["is_config_key", "split_list_overrides"]


def is_config_key(item: str) -> bool:
    """``item`` names a config key or a key inside a config section (``train.max_epoch``, ``use_gpu``,
    ``data.market_layout.foldr``: a misspelt key still goes to the overrides, whose error names the closest keys);
    dataset and model names are never section-dotted."""
    from ..config.defaults import get_default_config
    defaults = get_default_config()
    head = str(item).split(".")[0]
    return head in defaults and ("." in str(item) or not isinstance(defaults[head], dict))


def split_list_overrides(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Cut each list option in ``names`` at its first config key; the rest goes before ``args.opts`` (in place).
    ``-t NAME -- KEY VALUE`` keeps working (argparse already ends the list at ``--``)."""
    moved: List[str] = []
    for name in names:
        items = getattr(args, name, None)
        if not items:
            continue
        cut = next((i for i, item in enumerate(items) if is_config_key(item)), None)
        if cut is not None:
            setattr(args, name, list(items[:cut]) or None)
            moved += [str(item) for item in items[cut:]]
    if moved:
        rest = list(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)
        args.opts = moved + rest
