"""Input transforms applied to read counts before a model sees them.

A model's transform is recorded in its registry entry and applied the same way
by ``train``, ``evaluate`` and ``predict``.
"""

from __future__ import annotations

import numpy as np

from histcli.errors import ModelError

TRANSFORMS = {
    "log1p": np.log1p,
    "asinh": np.arcsinh,
    "identity": lambda counts: counts,
}


def apply_transform(name: str, counts: np.ndarray) -> np.ndarray:
    """``counts`` (genes x bins x marks) transformed into a new float32 array."""
    try:
        function = TRANSFORMS[name]
    except KeyError:
        raise ModelError(f"unknown input transform {name!r}; known: {', '.join(TRANSFORMS)}") from None
    return np.ascontiguousarray(function(counts.astype(np.float32, copy=False)), dtype=np.float32)
