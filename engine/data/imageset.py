"""The one in-memory form of a dataset every method consumes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageSet:
    """Decoded images of one dataset.

    Attributes:
        images: uint8 tensor N×H×W×C (C is 1 or 3), on the CPU until a method moves it.
        labels: int64 array of N true labels, or None when the dataset has none.
        class_names: names of the label values (empty when unlabelled).
        source: the dataset spec it was loaded from (e.g. ``digits``, ``folder:/data/cats``).
        paths: one source path per image for file-backed sets (empty otherwise).
        skipped: (path, reason) of every file that could not be read.
    """

    images: torch.Tensor
    labels: np.ndarray | None
    class_names: list[str]
    source: str
    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be uint8 N×H×W×C with C in (1, 3), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def files_digest(self) -> str | None:
        """SHA-256 of the image files' paths in order (None without files): a run stores it, so that reading
        its images again can tell that the folder's files changed even where their number did not."""
        if not self.paths:
            return None
        return hashlib.sha256("\0".join(self.paths).encode("utf-8", "surrogateescape")).hexdigest()

    @property
    def n_classes(self) -> int | None:
        return None if self.labels is None else int(len(np.unique(self.labels)))
