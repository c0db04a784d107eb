"""Datasets: named and user-supplied image sets decoded once into an :class:`ImageSet`, and the batched
augmentations that run on whichever device holds the images."""
from .augment import EvalTransform, SimCLRAugment, StrongAugment, WeakAugment, build_augment
from .folder import load_folder
from .imageset import ImageSet
from .registry import DATASETS, DatasetInfo, describe_datasets, load_dataset

__all__ = ["DATASETS", "DatasetInfo", "ImageSet", "describe_datasets", "load_dataset", "load_folder",
           "EvalTransform", "SimCLRAugment", "StrongAugment", "WeakAugment", "build_augment"]
