"""Default locations of the store and the registry, and the variables that override them.

Kept free of imports so that the command line's option definitions stay cheap.
"""

from pathlib import Path

STORE_ENV = "HISTCLI_STORE"
MODELS_ENV = "HISTCLI_MODELS"
DEFAULT_STORE = Path("histcli-data") / "store.h5"
DEFAULT_MODELS = Path("histcli-data") / "models"
