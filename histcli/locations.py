"""Default locations of the store and the registry, the variables that override them, and
the names allowed for cells and models (which become HDF5 group and folder names).

Only the standard library is imported, so that the command line's option definitions stay cheap.
"""

import os
import re
from pathlib import Path

STORE_ENV = "HISTCLI_STORE"
MODELS_ENV = "HISTCLI_MODELS"
DEFAULT_STORE = Path("histcli-data") / "store.h5"
DEFAULT_MODELS = Path("histcli-data") / "models"

# The characters a name may hold (a regular expression's character class), and the name itself.
_NAME_CHARACTERS = "A-Za-z0-9._+-"
_NAME = re.compile(rf"[A-Za-z0-9][{_NAME_CHARACTERS}]{{0,127}}")
_NOT_NAME_CHARACTER = re.compile(rf"[^{_NAME_CHARACTERS}]")
#: What an allowed cell or model name looks like, for error messages.
NAME_RULE = "use letters, digits, '.', '_', '+' or '-' (starting with a letter or digit, at most 128 characters)"


def is_allowed_name(name: str) -> bool:
    """A safe folder and HDF5 group name: no separators, no leading dot, at most 128 characters."""
    return _NAME.fullmatch(name) is not None


def name_part(text: str) -> str:
    """``text`` with each character a name cannot hold made '_', for names built from values (sweep's
    default entry names: ``dense=100,20`` gives ``-dense100_20``)."""
    return _NOT_NAME_CHARACTER.sub("_", text)


def default_store_path() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def default_models_path() -> Path:
    return Path(os.environ.get(MODELS_ENV) or DEFAULT_MODELS)
