"""Credentials stay out of what the project writes: an Optuna RDB storage URL such as
``postgresql://user:password@host/db`` reaches the jobs' overrides, so every writer of config, overrides or command
lines (run.json's command and error, the TensorBoard HPARAMS, the config printed at start, the resume hint, the
sweeper's log) passes its text through ``mask_secrets`` first.

Masking cannot reach Hydra's own files (``.hydra/overrides.yaml``, ``hydra.yaml``, ``multirun.yaml``): a password
typed on the command line is in them. The storage given through the environment variable ``STORAGE_ENV`` instead
is read where it is used and written nowhere (the jobs get ``${oc.env:CIFAR_LIT_OPTUNA_STORAGE}``, not its value).
"""

from __future__ import annotations

import re
from typing import Any

# the Optuna sweeper's storage (conf/hparams_search/*.yaml: the default when set; docs/sweeping.md)
STORAGE_ENV = "CIFAR_LIT_OPTUNA_STORAGE"
STORAGE_FROM_ENV = "${oc.env:" + STORAGE_ENV + "}"

MASK = "***"

# scheme://[user]:password@ ; RFC 3986 userinfo holds no unescaped "/", "?", "#" or "@", so the password ends at the
# "@" before the host and a port ("host:5432/db") or a path with an "@" further on is not taken for one
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)[^\s/?#@]+@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (``postgresql://user:***@host/db``)."""
    return _URL_PASSWORD.sub(lambda match: f"{match['head']}{MASK}@", text)


def mask_value(value: Any) -> Any:
    """A config value with ``mask_secrets`` applied to its text, at any depth of dicts, lists and tuples; other
    values unchanged."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {key: mask_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(item) for item in value)
    return value
