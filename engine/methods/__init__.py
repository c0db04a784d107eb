"""Clustering methods, one module each, registered by name when this package is imported."""
import importlib
import pkgutil

from .base import Method, MethodConfig, Stage, create_method, get_method, list_methods, register_method
from .context import Event, FitContext, pick_device

_SHARED_MODULES = {"base", "context", "training", "simclr", "queue_pretext", "feature_source"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SHARED_MODULES and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Method", "MethodConfig", "Stage", "create_method", "get_method", "list_methods", "register_method",
           "Event", "FitContext", "pick_device"]
