"""Clustering methods, one module each, registered by name when this package is imported."""
import importlib
import pkgutil

from .base import DeepMethod, Method, MethodConfig, Stage, create_method, get_method, list_methods, register_method
from .context import Event, FitContext, pick_device


def discover_methods(package: str) -> list[str]:
    """Import every module of ``package`` (those named ``_…`` excepted); returns the methods they registered.

    A module is a method when it registers one (``@register_method``); the shared modules beside the methods
    register none. So nothing lists the method modules, and an eleventh method is one new file.
    """
    before = set(list_methods())
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
    return [name for name in list_methods() if name not in before]


discover_methods(__name__)

__all__ = ["DeepMethod", "Method", "MethodConfig", "Stage", "create_method", "discover_methods", "get_method",
           "list_methods", "register_method", "Event", "FitContext", "pick_device"]
