"""The datasets the engine knows by name, and :func:`load_dataset` that turns a spec into an :class:`ImageSet`.

A spec is ``NAME`` (train and test together, as clustering papers report), ``NAME:train``, ``NAME:test`` or
``folder:PATH`` for the user's own images. The CLI ``list`` command and the UI read :data:`DATASETS` instead of
hard-coding names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.atomic import atomic_path
from engine.data.cache import default_cache_dir, map_images, reserve_space
from engine.data.decode import check_image_size
from engine.data.digits28 import load_digits28
from engine.data.folder import load_folder
from engine.data.imageset import ImageSet
from engine.data.layout import SPLITS
from engine.data.listing import image_source, is_archive, resolve_inside
from engine.data.subset import balanced_subset
from engine.errors import DatasetError, UserError

FOLDER_PREFIX = "folder:"


def folder_of(spec: str) -> str | None:
    """The path a ``folder:PATH`` dataset spec names (``""`` for a bare ``folder:``); None for a named dataset.

    Examples:
        >>> folder_of("folder:/data/photos"), folder_of("cifar10:test")
        ('/data/photos', None)
    """
    return spec[len(FOLDER_PREFIX):] if spec.startswith(FOLDER_PREFIX) else None

# Bump when resized named datasets would come out differently.
_RESIZE_FORMAT = 1

# CIFAR-100's 20 super-classes and the 5 fine classes in each (Krizhevsky, 2009, Appendix D). The fine→coarse
# table is derived from this by class name, so it cannot drift out of step with torchvision's fine-label order.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_COARSE_OF_FINE: dict[str, int] = {fine: coarse for coarse, members in
                                           enumerate(CIFAR100_SUPERCLASSES.values()) for fine in members}


@dataclass(frozen=True)
class DatasetInfo:
    """What a named dataset is. Sizes are for the full spec (train+test); None where the user's data decides.

    ``source`` is ``bundled`` (ships with scikit-learn), ``torchvision`` (downloaded, or found under
    ``--data-root``) or ``local`` (the user's files).
    """

    name: str
    description: str
    n_images: int | None
    image_size: int | None
    channels: int | None
    n_classes: int | None
    source: str
    class_names: tuple[str, ...] = ()


_DIGIT_NAMES = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (
    DatasetInfo("digits", "scikit-learn's handwritten digits, 8×8 gray (always available, no download; "
                "has no official split, so digits:train and digits:test are the whole set)",
                1797, 8, 1, 10, "bundled", _DIGIT_NAMES),
    DatasetInfo("digits28", "the same 1,797 digits drawn at 28×28 gray with a seeded stroke width and a shift of up "
                "to a pixel (MNIST-like; always available, no download, no official split)",
                1797, 28, 1, 10, "bundled", _DIGIT_NAMES),
    DatasetInfo("mnist", "MNIST handwritten digits, 28×28 gray (60k train + 10k test)",
                70000, 28, 1, 10, "torchvision", _DIGIT_NAMES),
    DatasetInfo("fashion-mnist", "Fashion-MNIST clothing, 28×28 gray (60k train + 10k test)",
                70000, 28, 1, 10, "torchvision",
                ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")),
    DatasetInfo("cifar10", "CIFAR-10 objects, 32×32 colour (50k train + 10k test); --data-root may also point "
                "at a train/<class>/ test/<class>/ image-folder copy or an archive of one",
                60000, 32, 3, 10, "torchvision",
                ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    DatasetInfo("cifar100-20", "CIFAR-100 labelled with its 20 super-classes, 32×32 colour (50k train + 10k test)",
                60000, 32, 3, 20, "torchvision", tuple(CIFAR100_SUPERCLASSES)),
    DatasetInfo("stl10", "STL-10 labelled images, 96×96 colour (5k train + 8k test)",
                13000, 96, 3, 10, "torchvision",
                ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")),
    DatasetInfo("folder:PATH", "your own images: one sub-folder per class (labelled) or a flat folder "
                "(unlabelled), or a .zip/.tar/.tar.gz of either", None, None, None, None, "local"),
)}


def describe_datasets() -> list[dict]:
    """One plain dict per known dataset, for the CLI ``list`` command and the UI's picker."""
    return [dataclasses.asdict(info) for info in DATASETS.values()]


def load_dataset(spec: str, *, data_root: str | None = None, download: bool = False,
                 image_size: int | None = None, data_roots: Sequence[Path] | None = None,
                 subset: int | None = None) -> ImageSet:
    """Load the dataset a spec names.

    Args:
        spec: ``NAME``, ``NAME:train``, ``NAME:test`` or ``folder:PATH`` (see :data:`DATASETS`).
        data_root: where torchvision's files are (or go, with ``download``); default
            ``<cache dir>/torchvision``. For an image-folder copy (``train/<class>/…``, ``test/<class>/…``,
            or an archive of that), the folder is decoded instead.
        download: let torchvision fetch missing files (needs a network).
        image_size: the side of the square images, from 1 to :data:`~engine.data.decode.MAX_IMAGE_SIZE`
            (shorter side to it, antialiased, then the centre square). Default: a named dataset's own size
            (digits 8, CIFAR 32, STL-10 96, also from an image-folder copy); for a folder, 64 px or the images'
            own size when smaller (see :func:`load_folder`).
        subset: keep only this many images, class-balanced and seeded (:func:`balanced_subset`); None: all.
        data_roots: the folders a shared server may read, or None for any: a folder and ``data_root`` must lie
            inside one, and so must every file of a folder (see :func:`load_folder`).

    Raises:
        DatasetError: unknown name or split, files missing, a folder with no readable image, or a folder or
            ``data_root`` outside ``data_roots``.

    Examples:
        >>> digits = load_dataset("digits")
        >>> len(digits), digits.image_shape, digits.class_names[:3]
        (1797, (8, 8, 1), ['0', '1', '2'])
    """
    spec = spec.strip()
    check_image_size(image_size)
    path = folder_of(spec)
    if path is not None:
        if not path:
            raise DatasetError(_NO_FOLDER_PATH)
        folder = dataclasses.replace(load_folder(path, image_size=image_size, data_roots=data_roots), source=spec)
        return folder if subset is None else balanced_subset(folder, subset)

    name, split = _named(spec)
    info = DATASETS[name]
    if data_root is not None and data_roots is not None:
        resolve_inside(data_root, data_roots)

    if name == "digits":
        images = _load_digits()
    elif name == "digits28":
        pixels, labels = load_digits28()
        images = ImageSet(images=torch.from_numpy(pixels), labels=labels, class_names=list(_DIGIT_NAMES),
                          source=name)
    elif data_root is not None and _is_image_folder_copy(Path(data_root).expanduser()):
        images = _load_folder_copy(info, Path(data_root).expanduser(), split or None,
                                   image_size or info.image_size, data_roots)
    else:
        images = _load_torchvision(info, data_root, download, split or None)
    images = dataclasses.replace(_resize(images, image_size), source=spec)
    return images if subset is None else balanced_subset(images, subset)


_NO_FOLDER_PATH = "folder: needs a path, e.g. folder:/data/my-photos"


def check_dataset_spec(spec: str, data_roots: Sequence[Path] | None = None, data_root: str | None = None,
                       download: bool = False) -> None:
    """What can be told of ``spec`` without loading it, so that a run can be refused before it is queued: a known
    name and split, or a folder spec whose path (inside ``data_roots``, when given) is a folder or an archive; a
    torchvision dataset not to be downloaded needs its ``data_root`` (or the default one) to exist.

    Raises:
        DatasetError: what :func:`load_dataset` would raise for it first.

    Examples:
        >>> check_dataset_spec("digits")
        >>> check_dataset_spec("~/pets")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        engine.errors.DatasetError: unknown dataset '~/pets'; ...; for a folder of your images write folder:~/pets
    """
    spec = spec.strip()
    path = folder_of(spec)
    if path is None:
        name, _ = _named(spec)
        if DATASETS[name].source == "torchvision" and not download:
            root = _torchvision_root(data_root)
            if not root.exists():
                raise _not_found(name, root)
    elif not path:
        raise DatasetError(_NO_FOLDER_PATH)
    else:
        image_source(path, data_roots)


def _named(spec: str) -> tuple[str, str]:
    """A named dataset spec's name (lower-cased) and split ("" for both).

    Raises:
        DatasetError: an unknown name or split.
    """
    name, _, split = spec.partition(":")
    name = name.lower()
    if name not in DATASETS or DATASETS[name].source == "local":
        looks_like_a_path = "/" in spec or "\\" in spec or spec.startswith("~")
        raise DatasetError(f"unknown dataset {spec!r}; known: {', '.join(DATASETS)} (e.g. cifar10:test)"
                           + (f"; for a folder of your images write {FOLDER_PREFIX}{spec}" if looks_like_a_path
                              else ""))
    if split not in ("", *SPLITS):
        raise DatasetError(f"unknown split {split!r} in {spec!r}; use {name}, {name}:train or {name}:test")
    return name, split


def _load_digits() -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are counts 0..16 of set bits in 4×4 blocks; stretch them to the usual 0..255.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ImageSet(images=torch.from_numpy(pixels), labels=bunch.target.astype(np.int64),
                    class_names=list(_DIGIT_NAMES), source="digits")


def _is_image_folder_copy(root: Path) -> bool:
    if root.is_file():
        return is_archive(root)
    return any((root / s).is_dir() and any(p.is_dir() for p in (root / s).iterdir()) for s in SPLITS)


def _load_folder_copy(info: DatasetInfo, root: Path, split: str | None, image_size: int | None,
                      data_roots: Sequence[Path] | None) -> ImageSet:
    """An image-folder copy of a named dataset; its labels are put in the dataset's own class order."""
    loaded = load_folder(root, image_size=image_size, channels=info.channels, split=split, data_roots=data_roots)
    canonical = list(info.class_names)
    if set(loaded.class_names) == set(canonical):
        mapping = [canonical.index(c) for c in loaded.class_names]
    elif info.name == "cifar100-20" and set(loaded.class_names) == set(CIFAR100_COARSE_OF_FINE):
        mapping = [CIFAR100_COARSE_OF_FINE[c] for c in loaded.class_names]
    else:
        raise DatasetError(f"{root} holds the classes {loaded.class_names[:12]}, not the {len(canonical)} "
                           f"classes of {info.name}; load it as folder:{root} instead")
    labels = np.asarray(mapping, dtype=np.int64)[loaded.labels]
    return dataclasses.replace(loaded, labels=labels, class_names=canonical)


def _load_torchvision(info: DatasetInfo, data_root: str | None, download: bool, split: str | None) -> ImageSet:
    import torchvision.datasets as tvd

    root = _torchvision_root(data_root)
    parts_images, parts_labels = [], []
    for side in [split] if split else list(SPLITS):
        try:
            if info.name == "stl10":
                ds = tvd.STL10(str(root), split=side, download=download)
            else:
                cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
                       "cifar100-20": tvd.CIFAR100}[info.name]
                ds = cls(str(root), train=side == "train", download=download)
        except (RuntimeError, OSError) as error:
            if download:
                raise DatasetError(f"could not download {info.name} into {root} ({error}); on a machine "
                                   f"without network, fetch the files elsewhere and pass --data-root DIR") from error
            raise _not_found(info.name, root) from error
        images, labels = _arrays_of(info, ds)
        parts_images.append(images)
        parts_labels.append(labels)
    images = np.concatenate(parts_images)
    return ImageSet(images=torch.from_numpy(np.ascontiguousarray(images)),
                    labels=np.concatenate(parts_labels).astype(np.int64),
                    class_names=list(info.class_names), source=info.name)


def _torchvision_root(data_root: str | None) -> Path:
    return Path(data_root).expanduser() if data_root else default_cache_dir() / "torchvision"


def _not_found(name: str, root: Path) -> DatasetError:
    return DatasetError(f"{name} is not in {root}; pass --data-root DIR pointing at the extracted torchvision files "
                        f"(or an image-folder copy), or --download on a machine with network")


def _arrays_of(info: DatasetInfo, ds) -> tuple[np.ndarray, np.ndarray]:
    """(N×H×W×C uint8 images, N labels) out of a torchvision dataset object, without going through PIL."""
    if info.name in ("mnist", "fashion-mnist"):
        return ds.data.numpy()[..., None], ds.targets.numpy()
    if info.name == "stl10":
        return ds.data.transpose(0, 2, 3, 1), np.asarray(ds.labels)
    labels = np.asarray(ds.targets)
    if info.name == "cifar100-20":
        coarse = np.array([CIFAR100_COARSE_OF_FINE[name] for name in ds.classes], dtype=np.int64)
        labels = coarse[labels]
    return ds.data, labels


def _resize(data: ImageSet, image_size: int | None) -> ImageSet:
    """``data`` at image_size×image_size (bilinear, antialiased when shrinking), cached like a decoded folder: a
    memory-mapped uint8 ``.npy`` per (dataset, split, source files, size), written in chunks into a memory map
    renamed into place, so the resized copy never sits in RAM beside the original."""
    if image_size is None or data.image_shape[:2] == (image_size, image_size):
        return data
    shape = (len(data), image_size, image_size, data.image_shape[2])
    file = _resized_file(data, image_size)
    try:
        images = map_images(file)
        if images.shape == shape and images.dtype == np.uint8:
            return dataclasses.replace(data, images=torch.from_numpy(images))
    except (OSError, ValueError):
        pass  # not cached yet, or damaged: resized again below
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(file) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            reserve_space(tmp)
            _resize_into(data.images, out)
            out.flush()
            del out  # unmapped before the rename
        images = map_images(file)
    except (OSError, UserError) as error:
        warnings.warn(f"could not cache the resized images in {file.parent} ({error}); the next load will resize "
                      f"again. Set DCE_CACHE_DIR to a writable folder to fix this.", stacklevel=3)
        images = np.empty(shape, np.uint8)
        _resize_into(data.images, images)
    return dataclasses.replace(data, images=torch.from_numpy(images))


def _resized_file(data: ImageSet, image_size: int) -> Path:
    """The cache file of ``data`` at ``image_size``, named by a digest of its labels and a sample of its pixels,
    so other source files (another ``--data-root``) get their own."""
    digest = hashlib.sha256()
    digest.update(json.dumps([data.source, list(data.images.shape), image_size, _RESIZE_FORMAT]).encode())
    digest.update(np.ascontiguousarray(data.images[:: max(1, len(data) // 256)].numpy()).tobytes())
    if data.labels is not None:
        digest.update(np.ascontiguousarray(data.labels).tobytes())
    name = data.source.replace(":", "-")
    return default_cache_dir() / "resized" / f"{name}-{image_size}px-{digest.hexdigest()[:32]}.npy"


def _resize_into(images: torch.Tensor, out: np.ndarray, chunk: int = 4096) -> None:
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=out.shape[1:3], mode="bilinear", align_corners=False, antialias=True)
        out[start:start + chunk] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
