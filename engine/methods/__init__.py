"""Clustering methods, one module each, registered by name."""
from . import kmeans, scan  # noqa: F401  (importing registers them)
from .base import Method, MethodConfig, Stage, create_method, get_method, list_methods, register_method
from .context import Event, FitContext, pick_device

__all__ = ["Method", "MethodConfig", "Stage", "create_method", "get_method", "list_methods", "register_method",
           "Event", "FitContext", "pick_device"]
