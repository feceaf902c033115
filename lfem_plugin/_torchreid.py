"""The one place that touches torchreid internals.

PyPI ``torchreid==0.2.5`` puts the real package under ``torchreid.reid`` (``import torchreid.models`` fails there),
while upstream 1.4.0 installed from source uses ``torchreid`` directly. :func:`root` resolves the layout once; every
other module of the plugin reaches torchreid through the attributes of that root, and mutation of torchreid's
module-global registries (``__model_factory``, ``__image_datasets``) happens only here.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import sys
import warnings
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple

from .registry import same_definition

__all__ = ["root", "resolve_root", "version", "alias_pypi_layout", "allow_numpy_scalars_in_checkpoints",
           "model_factory", "image_dataset_factory", "add_model", "add_image_dataset", "ROOT_CANDIDATES"]

_logger = logging.getLogger(__name__)

# Tried in order: PyPI 0.2.5 layout first, then upstream. A test swaps this tuple to simulate a layout.
ROOT_CANDIDATES = ("torchreid.reid", "torchreid")


@functools.lru_cache(maxsize=None)
def root() -> ModuleType:
    """Return torchreid's real package (``torchreid.reid`` on PyPI 0.2.5, ``torchreid`` upstream), once."""
    return resolve_root(ROOT_CANDIDATES)


# Import name -> pip distribution of what torchreid imports at module level (lfem_plugin's setup.py lists them).
_PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "Pillow", "yaml": "PyYAML", "sklearn": "scikit-learn"}


def resolve_root(candidates: Tuple[str, ...]) -> ModuleType:
    """The first importable module of ``candidates`` that has torchreid's ``models/data/engine/utils``.

    Raises:
        ImportError: naming the package that is really missing - torchreid itself, or a module torchreid imports
            (e.g. tensorboard), with the pip command that installs it.
    """
    errors = []
    for name in candidates:
        try:
            with warnings.catch_warnings():
                # 0.2.5 ships no compiled rank_cy and warns at import; our own evaluator replaces it.
                warnings.filterwarnings("ignore", message=".*Cython.*")
                mod = importlib.import_module(name)
        except ImportError as err:
            missing = _missing_dependency(name, err)
            if missing is not None:
                raise missing from err
            errors.append(f"{name}: {err}")
            continue
        if all(hasattr(mod, sub) for sub in ("models", "data", "engine", "utils")):
            _logger.debug("torchreid root resolved to %s", name)
            return mod
        errors.append(f"{name}: has no models/data/engine/utils")
    raise ImportError("cannot find torchreid; install it with `pip install torchreid==0.2.5` "
                      "(or upstream deep-person-reid from source). Tried: " + "; ".join(errors))


def _missing_dependency(candidate: str, err: ImportError) -> Optional[ImportError]:
    """An ImportError naming the module torchreid failed to import, when that module is not torchreid itself."""
    missing = getattr(err, "name", None)
    if not missing or missing == candidate or candidate.startswith(missing + ".") or missing.startswith("torchreid"):
        return None
    top = missing.split(".")[0]
    pip = _PIP_NAMES.get(top, top)
    return ImportError(f"torchreid is installed but cannot be imported: it needs the module {missing!r}, which is "
                       f"missing; install it with `pip install {pip}` (lfem_plugin's dependencies list it; `pip "
                       f"install --force-reinstall lfem_plugin` restores them all)", name=missing)


def version() -> str:
    """The installed torchreid distribution's version (``0.2.5`` on PyPI; its ``torchreid.reid`` says 1.4.0)."""
    try:
        return importlib.metadata.version("torchreid")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path
        return str(getattr(root(), "__version__", "unknown"))


def alias_pypi_layout() -> int:
    """On PyPI 0.2.5 make ``torchreid.<sub>`` importable as the upstream layout has it (``from torchreid.utils
    import FeatureExtractor``, ``import torchreid.models``), so torchreid's own ``scripts/main.py`` runs: every loaded
    ``torchreid.reid.<sub...>`` module is also entered in ``sys.modules`` as ``torchreid.<sub...>``. Nothing is
    replaced (a name that exists is left alone) and upstream, where the root is ``torchreid`` itself, nothing
    happens. Returns the number of aliases added."""
    real = root().__name__
    if real == "torchreid":
        return 0
    added = 0
    for name, module in list(sys.modules.items()):
        if name.startswith(real + ".") and module is not None:
            alias = "torchreid." + name[len(real) + 1:]
            if alias not in sys.modules:
                sys.modules[alias] = module
                added += 1
    return added


def allow_numpy_scalars_in_checkpoints() -> None:
    """Allow-list, for ``torch.load(weights_only=True)``, the numpy scalar and dtype types that torchreid's
    ``save_checkpoint`` pickles for ``rank1`` (nothing else): torchreid's own ``load_checkpoint`` calls
    ``torch.load`` with the weights-only default of torch >= 2.6 and otherwise cannot read its own checkpoints."""
    import torch

    from .utils.checkpoint import numpy_scalar_globals
    torch.serialization.add_safe_globals(numpy_scalar_globals())


def _module_dict(module: ModuleType, attr: str) -> Dict[str, Any]:
    # String lookup on purpose: `module.__model_factory` written inside a class is name-mangled.
    table = vars(module).get(attr)
    if not isinstance(table, dict):
        raise RuntimeError(f"{module.__name__}.{attr} is not a dict; this torchreid version is not supported")
    return table


def model_factory() -> Dict[str, Callable[..., Any]]:
    """torchreid's live ``name -> builder`` dict used by ``build_model``."""
    return _module_dict(root().models, "__model_factory")


def image_dataset_factory() -> Dict[str, type]:
    """torchreid's live ``name -> dataset class`` dict used by ``ImageDataManager``."""
    return _module_dict(importlib.import_module(root().__name__ + ".data.datasets"), "__image_datasets")


def _add(table: Dict[str, Any], kind: str, name: str, obj: Any) -> None:
    old = table.get(name)
    if old is None or old is obj or same_definition(old, obj):
        table[name] = obj
        return
    raise KeyError(f"torchreid already has a {kind} named {name!r} ({old!r}); the plugin will not replace it "
                   f"with {obj!r}")


def add_model(name: str, builder: Callable[..., Any]) -> None:
    """Insert ``builder`` into torchreid's model factory; idempotent, raises on a clash with another object."""
    _add(model_factory(), "model", name, builder)


def add_image_dataset(name: str, cls: type) -> None:
    """Insert ``cls`` into torchreid's image-dataset registry; idempotent, raises on a clash."""
    _add(image_dataset_factory(), "dataset", name, cls)
