"""Features that hold NaN or inf are never written, ranked or scored: the error names the images they came from.

A damaged or diverged checkpoint gives non-finite features; ranking by ``nan`` or writing NaN rows would pass for a
result. :func:`require_finite_features` is called by ``extract``/``search`` (after extraction) and by the
evaluation of ``test`` and training (before the distances).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["NonFiniteFeaturesError", "non_finite_rows", "require_finite_features"]


class NonFiniteFeaturesError(RuntimeError):
    """Some features hold NaN or inf; nothing was written, ranked or scored."""


def non_finite_rows(features: Any) -> np.ndarray:
    """Indices of the rows of ``features`` (``(N, D)`` numpy array or torch tensor) that hold NaN or inf."""
    values = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
    return np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))


def require_finite_features(features: Any, names: Optional[Sequence[str]], what: str) -> None:
    """Raise unless every row of ``features`` is finite.

    Args:
        features: ``(N, D)`` features (numpy or torch).
        names: the ``N`` image paths, in row order (None: rows are named by index).
        what: what the features are for, e.g. ``"extract"`` or ``"test market1501 query"``.

    Raises:
        NonFiniteFeaturesError: naming how many rows are bad and the first five images.
    """
    bad = non_finite_rows(features)
    if not len(bad):
        return
    shown = [str(names[i]) if names is not None and i < len(names) else f"row {i}" for i in bad[:5]]
    raise NonFiniteFeaturesError(
        f"{what}: {len(bad)} of {len(features)} features hold NaN or inf (e.g. {', '.join(shown)}); nothing was "
        f"written, ranked or scored. The model gives non-finite values: its checkpoint may be damaged or from a "
        f"diverged run (use an earlier checkpoint), or the images may be unusual (check the ones named)")
