"""Registry of model architectures.

Each architecture lives in its own module of this package, named after it, and
registers one :class:`Architecture` subclass with :func:`register`. Listing the
architectures (:func:`names`) reads the package folder without importing any
module, so ``histcli --help`` and shell completion never import torch; only
:func:`get` imports the module of the one architecture asked for.
"""

from __future__ import annotations

import importlib
import math
import numbers
import pkgutil
from typing import TYPE_CHECKING

from histcli.errors import HyperparameterError, ModelError

if TYPE_CHECKING:
    import torch

_REGISTRY: dict[str, Architecture] = {}


class Architecture:
    """A model family: its defaults and how to build a module for a data shape.

    Subclasses set the class attributes and implement :meth:`make_module`;
    :meth:`build` checks the hyperparameters before calling it.
    """

    #: Registry key; must equal the name of the module that defines the class.
    name: str = ""
    #: One line shown in ``--help``.
    summary: str = ""
    #: Model-shape defaults; the type of each value is the type users must give.
    hyperparameters: dict = {}
    #: Trainer defaults (see histcli.training): batch_size and patience None are
    #: chosen per cell. The cap is twice the paper's 500 epochs: at 500 the CRNN was
    #: still improving on E116 (best epoch 481).
    training: dict = {
        "lr": 1e-3,
        "batch_size": None,
        "weight_decay": 0.0,
        "max_epochs": 1000,
        "patience": None,
        "clip_norm": 0.0,
        "lr_schedule": "constant",
    }
    #: Name of the transform the trainer applies to read counts before the model.
    transform: str = "log1p"
    #: Raised when the same hyperparameters and seed start a different model (a new
    #: initialisation, say), so that a resumed sweep does not take an entry trained by
    #: an older histcli for the one it would train now. Entries record it.
    revision: int = 1

    def build(self, n_bins: int, n_marks: int, hparams: dict) -> torch.nn.Module:
        """Return a fresh module mapping (batch, n_bins, n_marks) inputs to (batch,) logits.

        Keys missing from ``hparams`` take their defaults; unknown keys, values
        out of range and shapes the architecture cannot handle raise ModelError.
        """
        shape = []
        for label, value in (("bins", n_bins), ("marks", n_marks)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ModelError(f"{self.name}: the number of {label} must be a positive integer, got {value!r}")
            shape.append(int(value))  # numpy integers from stored arrays become plain ints
        return self.make_module(*shape, resolve_hyperparameters(self, hparams))

    def make_module(self, n_bins: int, n_marks: int, hparams: dict) -> torch.nn.Module:
        """Build the module from checked, complete hyperparameters."""
        raise NotImplementedError

    def check_hyperparameters(self, hparams: dict) -> None:
        """Raise HyperparameterError for converted values that do not fit together (any data shape)."""


def register(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: record an instance of ``cls`` under ``cls.name``."""
    module_name = cls.__module__.rpartition(".")[2]
    if cls.name != module_name:
        raise ModelError(
            f"architecture class {cls.__qualname__} is named {cls.name!r} "
            f"but lives in module {module_name!r}; the two must match"
        )
    _REGISTRY[cls.name] = cls()
    return cls


def names() -> list[str]:
    """Names of all architectures, found from the package's module files without importing them."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and not info.ispkg
    )


def get(name: str) -> Architecture:
    """Import the module of architecture ``name`` and return its registered instance."""
    known = names()
    if name not in known:
        raise ModelError(f"unknown architecture {name!r}; known architectures: {', '.join(known)}")
    importlib.import_module(f"{__name__}.{name}")
    if name not in _REGISTRY:
        raise ModelError(f"module {__name__}.{name} does not register an architecture named {name!r}")
    return _REGISTRY[name]


def resolve_hyperparameters(arch: Architecture, overrides: dict) -> dict:
    """Merge ``overrides`` into the defaults of ``arch``, converting command-line strings.

    A string is converted to the type of the default it replaces ("0.3" for a
    float, "64" for an int, "100,20" for a tuple of ints). Unknown keys,
    unconvertible values and values out of range raise ModelError.
    """
    defaults = arch.hyperparameters
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) if defaults else "none"
        raise HyperparameterError(
            f"{arch.name}: unknown hyperparameter(s) {', '.join(unknown)}; valid hyperparameters: {valid}"
        )
    resolved = dict(defaults)
    for key, value in overrides.items():
        resolved[key] = _convert(arch.name, key, value, defaults[key])
    arch.check_hyperparameters(resolved)
    return resolved


def _convert(arch_name: str, key: str, value, default):
    """Return ``value`` as the type of ``default``, checked for range."""
    where = f"{arch_name}: hyperparameter {key}"
    if isinstance(default, int) and not isinstance(default, bool):
        return _positive(where, _to_number(where, value, int))
    if isinstance(default, float):
        number = _to_number(where, value, float)
        if not math.isfinite(number):
            raise HyperparameterError(f"{where} must be a finite number, got {number}")
        # Every float hyperparameter is a dropout rate, or a non-negative scale.
        if key.endswith("dropout") and not 0.0 <= number < 1.0:
            raise HyperparameterError(f"{where} must be at least 0 and below 1, got {number}")
        if number < 0.0:
            raise HyperparameterError(f"{where} must not be negative, got {number}")
        return number
    if isinstance(default, tuple):
        if isinstance(value, str):
            text = value.strip().strip("()[]").strip()
            items = [item.strip() for item in text.split(",")] if text else []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        return tuple(_positive(where, _to_number(where, item, int)) for item in items)
    raise ModelError(f"{where} has a default of unsupported type {type(default).__name__}")


def _to_number(where: str, value, kind: type):
    """``value`` as an int or a float (``kind``): a number or its text, never a bool."""
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if kind is float or isinstance(value, int) or value.is_integer():
            return kind(value)
    expected = "an integer" if kind is int else "a number"
    raise HyperparameterError(f"{where} expects {expected}, got {value!r}")


def _positive(where: str, number: int) -> int:
    # Integer hyperparameters are sizes (maps, units, kernel widths, pool sizes).
    if number < 1:
        raise HyperparameterError(f"{where} must be a positive integer, got {number}")
    return number
