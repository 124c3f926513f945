"""Integrations with training frameworks: a PyTorch Lightning module or a Hugging Face
``Trainer`` trained as poptrain members.

The frameworks are imported only when an integration is used (``pip install
"poptrain[lightning]"``, ``pip install "poptrain[hf]"``). See ``docs/integrations.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poptrain.integrations.huggingface import HFTrainable, huggingface_member
    from poptrain.integrations.lightning import LightningTrainable, lightning_member

_WHERE = {
    "LightningTrainable": "poptrain.integrations.lightning",
    "lightning_member": "poptrain.integrations.lightning",
    "HFTrainable": "poptrain.integrations.huggingface",
    "huggingface_member": "poptrain.integrations.huggingface",
}

__all__ = ["HFTrainable", "LightningTrainable", "huggingface_member", "lightning_member"]


def __getattr__(name: str) -> object:
    """Load an integration's module when one of its names is first used."""
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'poptrain.integrations' has no attribute {name!r}")
