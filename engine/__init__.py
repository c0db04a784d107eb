"""Deep Clustering Explorer engine: datasets, methods, runs and analysis, usable without the UI.

Importing it needs only torch, torchvision, numpy, scipy and scikit-learn; streamlit, plotly, faiss, umap and
pacmap are imported lazily by the functions that use them.

    >>> from engine import load_dataset, create_method
    >>> images = load_dataset("digits")
    >>> len(images), images.image_shape
    (1797, (8, 8, 1))
"""
from .data import ImageSet, load_dataset
from .errors import ConfigError, DatasetError, RunCancelled, TrainingError, UserError
from .methods import FitContext, create_method, get_method, list_methods
from .runs import JobManager, RunRequest, RunStore

__version__ = "0.1.0"
__all__ = ["ImageSet", "load_dataset", "ConfigError", "DatasetError", "RunCancelled", "TrainingError", "UserError",
           "FitContext", "create_method", "get_method", "list_methods", "JobManager", "RunRequest", "RunStore"]
