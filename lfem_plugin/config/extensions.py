"""Extension points of the config, for research projects beside the core (``projects/``): keys of their own (in
any section, with their defaults and choices) and the registered-variant settings those keys carry.

A project calls :func:`register_keys` once, on import (e.g. ``import lfem_visibility``); from then on every default
config holds its keys, :func:`~lfem_plugin.config.loader.apply_variant` maps its names' settings to them and
:func:`~lfem_plugin.config.loader.check_choices` checks them. The core never imports a project.

Reference: fast-reid ``projects/`` (``add_*_config(cfg)`` per project); mmengine's ``custom_imports``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Tuple

from yacs.config import CfgNode as CN

__all__ = ["KeyExtension", "register_keys", "extensions", "RETIRED_KEYS"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyExtension:
    """One project's config keys.

    Args:
        project: the project's import name (named in errors about its keys).
        add_keys: adds the keys, with their defaults, to a default config (``add_keys(cfg)``).
        variant_keys: a registered variant's setting -> the key that carries it (both directions, as the core's
            ``MODEL_ARG_KEYS`` / ``TRAINING_KEYS``).
        choices: keys that take one of a few names -> the names.
    """

    project: str
    add_keys: Callable[[CN], None]
    variant_keys: Mapping[str, str] = field(default_factory=dict)
    choices: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)


_EXTENSIONS: Dict[str, KeyExtension] = {}

# Keys that earlier releases wrote into every stored config, now a project's (projects/visibility): a config that
# holds one at this value (the paper's behaviour) loads without the project; any other value needs it.
RETIRED_KEYS: Dict[str, Tuple[object, str]] = {
    key: (value, "lfem_visibility") for key, value in (
        ("lfem.gate_supervision", 0.0), ("lfem.occluder", "noise"), ("lfem.gate_scope", "refined"),
        ("lfem.token_supervision", 0.0), ("lfem.gate_grad", "all"), ("lfem.gate_input", "relation"))}


def register_keys(extension: KeyExtension) -> None:
    """Add ``extension``'s keys to every default config from now on. Idempotent for the same object; raises
    ``ValueError`` when another extension of the same project, or one claiming a key already claimed, is given."""
    known = _EXTENSIONS.get(extension.project)
    if known is extension:
        return
    if known is not None:
        raise ValueError(f"config keys of project {extension.project!r} are already registered by another object")
    claimed = {key for ext in _EXTENSIONS.values() for key in (*ext.variant_keys.values(), *ext.choices)}
    clash = sorted(claimed & {*extension.variant_keys.values(), *extension.choices})
    if clash:
        raise ValueError(f"project {extension.project!r} registers config keys {clash}, which another project has")
    _EXTENSIONS[extension.project] = extension
    _logger.debug("config keys of %s registered", extension.project)


def extensions() -> Tuple[KeyExtension, ...]:
    """The registered extensions, in registration order."""
    return tuple(_EXTENSIONS.values())
