"""Loading a config: defaults, then a YAML file (with ``_BASE_``) or a stored config text, then ``KEY VALUE``
overrides, then a registered variant's own settings; frozen.

Library code never reads the config: the adapters in :mod:`lfem_plugin.config.adapters` turn it into arguments.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode as CN

from .adapters import config_value, variant_keys
from .defaults import get_default_config
from .extensions import RETIRED_KEYS, extensions

__all__ = ["load_config", "load_yaml_with_base", "apply_variant", "check_choices"]

BASE_KEY = "_BASE_"
_logger = logging.getLogger(__name__)


def load_yaml_with_base(path: str | os.PathLike, _chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """Read a YAML mapping; a ``_BASE_`` key (relative to the file) is loaded first and deep-merged under it.

    Errors name the file: missing, not valid YAML (with the line), not a mapping, or a ``_BASE_`` loop.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found" + (f" (the _BASE_ of {_chain[-1]})" if _chain else ""))
    if path.resolve() in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ValueError(f"_BASE_ loop in config files: {loop}; remove one of the _BASE_ keys")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of keys (e.g. 'train: {{max_epoch: 10}}'), not a "
                         f"{type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    merged = load_yaml_with_base(path.parent / base, (*_chain, path.resolve()))
    _deep_merge(merged, data)
    return merged


def _deep_merge(into: Dict[str, Any], new: Dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _merge(cfg: CN, source: str, merge) -> None:
    """Run one yacs merge; its KeyError / AssertionError / ValueError, and keys left without a value (null), become
    an error naming ``source``."""
    try:
        merge()
    except (KeyError, AssertionError) as err:  # yacs: KeyError from files, AssertionError from KEY VALUE lists
        raise KeyError(f"unknown config key in {source}: {_unknown_key_hint(err)}; the valid keys are in "
                       f"lfem_plugin/config/defaults.py (in the installed package)") from None
    except ValueError as err:  # yacs: type mismatch, odd number of KEY VALUE items
        raise ValueError(f"bad value in {source}: {' '.join(str(err).split())}") from None
    nulls = _null_keys(cfg, get_default_config())
    if nulls:
        raise ValueError(f"config keys without a value (null/None) in {source}: {', '.join(nulls)}; give each a "
                         f"value, or delete it to keep the default")


def _unknown_key_hint(err: BaseException) -> str:
    """yacs's message without its quotes, plus the closest valid keys: ``lfem.strdie (did you mean
    lfem.stride or lfem.share?)``."""
    import difflib
    import re
    text = str(err.args[0]) if err.args else str(err)
    found = re.search(r"key: (\S+)", text)
    if not found:
        return text
    key = found.group(1).strip("'\"")
    close = difflib.get_close_matches(key, _flat_keys(get_default_config()), n=2, cutoff=0.75)
    return key + (f" (did you mean {' or '.join(close)}?)" if close else "")


def _null_keys(cfg: CN, defaults: CN, prefix: str = "") -> List[str]:
    found = []
    for key, value in cfg.items():
        default = defaults.get(key)
        if isinstance(value, CN):
            found += _null_keys(value, default, f"{prefix}{key}.")
        elif value is None and default is not None:
            found.append(f"{prefix}{key}")
    return found


def load_config(path: str | os.PathLike | None = None, opts: Sequence[str] = (), text: Optional[str] = None,
                changes: Optional[Mapping[str, Any]] = None, changes_source: str = "the given changes") -> CN:
    """Defaults, then the YAML file (with ``_BASE_``) or YAML ``text`` (a config stored in a checkpoint), then
    ``changes`` (``{'lfem.use_lfem': False, ...}``: typed values, as in a YAML file; ``changes_source`` names them in
    errors), then ``KEY VALUE`` overrides; frozen. Unknown keys, wrong types, empty (null) values and names outside a
    key's choices (:func:`check_choices`) fail with the key's name and the place it came from."""
    cfg = get_default_config()
    explicit: Dict[str, str] = {}  # key -> where it was set
    data = load_yaml_with_base(path) if path else (yaml.safe_load(text) or {}) if text else {}
    first = f"config file {path}" if path else "the checkpoint's stored config"
    data = _without_retired(cfg, data, first)
    layers = [(first, data), (changes_source, _without_retired(cfg, _nested(changes or {}), changes_source))]
    for source, layer in layers:
        if layer:
            _merge(cfg, source, lambda: cfg.merge_from_other_cfg(CN(layer)))
            explicit.update(dict.fromkeys(_flat_keys(layer), source))
    if opts:
        if len(opts) % 2:
            raise ValueError(f"the KEY VALUE overrides have an odd number of items ({' '.join(map(str, opts))}): "
                             f"every key needs a value")
        opts = _opts_without_retired(cfg, opts)
        _merge(cfg, "the KEY VALUE overrides", lambda: cfg.merge_from_list(list(opts)))
        explicit.update(dict.fromkeys(map(str, opts[0::2]), "the KEY VALUE overrides"))
    if text and not path:  # after every layer: the name that is built, and only keys nothing else set
        explicit.update(_pin_absent_keys(cfg, data, explicit))
    apply_variant(cfg, explicit)
    check_choices(cfg, explicit)
    cfg.freeze()
    return cfg


def _retired(cfg: CN, key: str, value: Any, source: str) -> bool:
    """Is ``key`` a retired key (:data:`~lfem_plugin.config.extensions.RETIRED_KEYS`) this config lacks, at the
    value that meant the paper (then it is dropped)? At another value, ``KeyError`` naming the project to install."""
    if key not in RETIRED_KEYS or key in _flat_keys(cfg):
        return False
    paper, project = RETIRED_KEYS[key]
    if value == paper or (isinstance(paper, float) and isinstance(value, (int, float)) and float(value) == paper):
        return True
    raise KeyError(f"{key} {value!r} (in {source}) is a key of the research project {project} "
                   f"(projects/{project.replace('lfem_', '')}): install it (pip install -e "
                   f"projects/{project.replace('lfem_', '')}); lfem-reid loads installed projects, Python code needs "
                   f"`import {project}`")


def _without_retired(cfg: CN, layer: Dict[str, Any], source: str) -> Dict[str, Any]:
    """``layer`` without the retired keys at their paper value (older checkpoints' stored configs hold them all)."""
    drop = [key for key in _flat_keys(layer) if _retired(cfg, key, _get(layer, key), source)]
    for key in drop:
        *parents, last = key.split(".")
        node = layer
        for part in parents:
            node = node[part]
        del node[last]
    return layer


def _opts_without_retired(cfg: CN, opts: Sequence[str]) -> List[str]:
    pairs = zip(opts[0::2], opts[1::2])
    return [item for key, value in pairs if not _retired(cfg, str(key), _literal(value), "the KEY VALUE overrides")
            for item in (key, value)]


def _literal(value: Any) -> Any:
    """A KEY VALUE override's value as yacs reads it (a Python literal where it is one)."""
    import ast
    try:
        return ast.literal_eval(value) if isinstance(value, str) else value
    except (ValueError, SyntaxError):
        return value


def _get(data: Dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _choice_keys() -> Tuple[Tuple[str, Tuple[str, ...]], ...]:
    from ..models.sie import SIE_MODES
    core = (("test.cross_domain_sie", SIE_MODES), ("test.dist_metric", ("euclidean", "cosine")))
    return core + tuple((key, tuple(names)) for ext in extensions() for key, names in ext.choices.items())


def check_choices(cfg: CN, explicit: Optional[Mapping[str, str]] = None) -> None:
    """Keys that take one of a few names hold one of them; raises ``ValueError`` naming the key, the value, where it
    was set (``explicit``: key -> where, as :func:`load_config` tracks it) and the choices. Every command loads its
    config through here, so a bad value fails at once, also in commands that never read the key (e.g. ``extract``)."""
    for key, choices in _choice_keys():
        value = config_value(cfg, key)
        if value not in choices:
            where = f" (in {explicit[key]})" if explicit and key in explicit else ""
            raise ValueError(f"{key} {value!r}{where} is not one of {', '.join(map(repr, choices))}")


# The top-level keys every stored config (``cfg.dump()``) has held since the first plugin release: a stored text
# holding all of them is a whole dump. Frozen, so a section added later does not make older checkpoints "partial".
DUMP_SECTIONS = ("use_gpu", "model", "data", "sampler", "train", "sgd", "loss", "test", "lfem")


def _pin_absent_keys(cfg: CN, stored: Dict[str, Any], explicit: Mapping[str, str]) -> Dict[str, str]:
    """The keys a stored config lacks, pinned to their defaults (key -> where), so no variant setting reaches them.

    A checkpoint stores the whole config of its run (``cfg.dump()``), so a key it lacks did not exist when the run
    was trained. Its default is the behaviour before it existed (a new key's default never changes what older
    configs did); the registered name's *current* setting of that key may not be (a name may set a key added
    after its older runs were trained). Keys the name fixes (``builder.fixed``) are left to it: the name built them
    that way then too; keys another layer set (``explicit``) are theirs. Absent keys are logged once. A stored text
    that is not a whole config (it lacks a key of :data:`DUMP_SECTIONS`, e.g. a hand-written ``model: {name:
    ...}``) is read like a config file: nothing is pinned.
    """
    from ..registry import MODELS
    if not set(DUMP_SECTIONS) <= set(stored):
        return {}
    builder = MODELS.get(cfg.model.name) if cfg.model.name in MODELS else None
    settings = getattr(builder, "settings", {})
    fixed_keys = {key for arg in getattr(builder, "fixed", ()) if arg in settings
                  for key in _variant_values(arg, settings[arg])}
    have = set(_flat_keys(stored)) | fixed_keys | set(explicit)
    absent = [key for key in _flat_keys(get_default_config()) if key not in have]
    if absent:
        _logger.info("the checkpoint's stored config predates %d key(s), which keep their defaults (the behaviour "
                     "before each key existed): %s", len(absent), ", ".join(absent))
    return dict.fromkeys(absent, "the checkpoint's stored config (key absent: its default)")


def _nested(changes: Mapping[str, Any]) -> Dict[str, Any]:
    """``{'a.b': 1}`` -> ``{'a': {'b': 1}}``."""
    out: Dict[str, Any] = {}
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _flat_keys(data: Dict[str, Any], prefix: str = "") -> List[str]:  # a CfgNode is a dict too
    keys = []
    for key, value in data.items():
        keys += _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def _variant_values(arg: str, value: Any) -> Dict[str, Any]:
    """The config values of one variant setting ({} for settings no key carries, e.g. num_cameras)."""
    if arg == "img_size":
        return {"data.height": int(value[0]), "data.width": int(value[1])}
    if arg == "num_views":
        from ..models.lfem_vit import VIEW_NAMES
        return {"lfem.views": list(VIEW_NAMES[:value])}
    keys = variant_keys()
    return {keys[arg]: value} if arg in keys else {}


def _set(cfg: CN, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def apply_variant(cfg: CN, explicit: Dict[str, str]) -> None:
    """A registered variant's own settings (e.g. ``vit_transreid``: no LFEM, one view) replace the defaults of the
    keys that carry them; keys the user set (``explicit``: key -> where) win, except that one contradicting a setting
    the name fixes (``builder.fixed``, e.g. ``lfem.use_lfem true`` with ``vit_transreid``) is an error naming both.
    torchreid's own models have no variant settings."""
    from ..registry import MODELS
    if cfg.model.name not in MODELS:
        return
    builder = MODELS.get(cfg.model.name)
    for arg, value in getattr(builder, "settings", {}).items():
        for key, wanted in _variant_values(arg, value).items():
            if key not in explicit:
                _set(cfg, key, wanted)
            elif arg in getattr(builder, "fixed", ()) and not _agrees(arg, config_value(cfg, key), wanted):
                raise ValueError(f"{key} {config_value(cfg, key)} (in {explicit[key]}) contradicts the model "
                                 f"{cfg.model.name}, which fixes {key} {wanted}; remove the key, or choose a model "
                                 f"whose name allows it (e.g. lfem_vit, whose switches are all keys)")


def _agrees(arg: str, value: Any, wanted: Any) -> bool:
    if arg == "num_views":
        return len(value) == len(wanted)
    return value == wanted
