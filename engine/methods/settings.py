"""What a method setting may hold: the type its config dataclass annotates, and the range or choices its field
declares (:func:`bounded`, :func:`one_of`) or, for a field that declares none, that its name implies.

One checker serves every way a value arrives, so a bad one is refused before a run is queued: the CLI's
``--set`` (parsed as JSON), the Train page's widgets, and a stored run's config read back from the run store.

Examples:
    >>> @dataclass
    ... class Config:
    ...     max_iter: int = bounded(300, low=1)
    ...     solver: str = one_of("lloyd", ("lloyd", "elkan"))
    >>> check_types(Config(max_iter=1e30))
    Traceback (most recent call last):
    engine.errors.ConfigError: max_iter must be an integer, got 1e+30
    >>> check_ranges(Config(solver="auto"))
    Traceback (most recent call last):
    engine.errors.ConfigError: solver must be one of lloyd, elkan, got 'auto'
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import ConfigError

LR_SCHEDULES = ("constant", "cosine")  # what an ``lr_schedule`` setting may name
INT64_MAX = 2**63 - 1  # torch and numpy keep integers in 64 bits; a larger one overflows or loops for ever


@dataclass(frozen=True)
class Bounds:
    """The interval a number must lie in; a side left as None is open-ended."""

    low: float | None = None
    high: float | None = None
    low_excluded: bool = False  # ``low`` itself is not allowed

    def contains(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_excluded else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        """``positive``, ``≥ 0``, ``in (0, 1]``, ``≤ 9``: how the error message states the range."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_excluded else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return "positive" if (self.low, self.low_excluded) == (0, True) else \
                f"{'>' if self.low_excluded else '≥'} {self.low:g}"
        return f"≤ {self.high:g}"


def bounded(default: float, *, low: float | None = None, high: float | None = None,
            low_excluded: bool = False, help: str | None = None) -> Any:
    """A config field whose number must lie between ``low`` and ``high`` (inclusive unless ``low_excluded``);
    ``help`` says what it means (the Train page shows it)."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds(low, high, low_excluded), "help": help})


def described(default: Any, help: str) -> Any:
    """A config field with no declared range or choices whose ``help`` says what it means (the Train page shows
    it), for a setting whose name alone does not (:func:`implied_help`)."""
    return dataclasses.field(default=default, metadata={"help": help})


def one_of(default: str, choices: Sequence[str], help: str | None = None) -> Any:
    """A config field that must name one of ``choices``; ``help`` says what they mean (the Train page shows it)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices), "help": help})


POSITIVE = Bounds(0, low_excluded=True)
NOT_NEGATIVE = Bounds(0)


def implied_bounds(name: str) -> list[Bounds]:
    """The ranges a field's name implies when its field declares none: epochs and weights are ≥ 0; counts
    (``n_*``), batch sizes, learning rates and temperatures positive; crop scales in (0, 1]."""
    implied = []
    if name.endswith("epochs") or name.endswith(("weight_decay", "_weight")):
        implied.append(NOT_NEGATIVE)
    if name.endswith(("batch_size", "lr", "temperature")) or name.startswith("n_"):
        implied.append(POSITIVE)
    if name.endswith("crop_min_scale"):
        implied.append(Bounds(0, 1, low_excluded=True))
    return implied


def implied_choices(name: str) -> tuple[str, ...] | None:
    return LR_SCHEDULES if name.endswith("lr_schedule") else None


def setting_range(config_type: type, name: str, integer: bool) -> tuple[float | None, float | None]:
    """The closed interval a form widget for setting ``name`` of ``config_type`` offers: the intersection of its
    declared or implied bounds. An excluded low end becomes the next integer for an integer setting; a float's is
    left open (None), so :func:`check_ranges` refuses exactly that value when the run is asked for.

    Examples:
        >>> @dataclass
        ... class Config:
        ...     n_heads: int = 5
        ...     lr: float = 1e-3
        ...     momentum: float = bounded(0.99, low=0, high=1)
        >>> setting_range(Config, "n_heads", True), setting_range(Config, "lr", False)
        ((1, None), (None, None))
        >>> setting_range(Config, "momentum", False)
        (0, 1)
    """
    low = high = None
    for bounds in _bounds_of(_field(config_type, name)):
        if bounds.low is not None:
            edge = (bounds.low + 1 if integer else None) if bounds.low_excluded else bounds.low
            low = edge if low is None or (edge is not None and edge > low) else low
        if bounds.high is not None:
            high = bounds.high if high is None else min(high, bounds.high)
    return low, high


def setting_choices(config_type: type, name: str) -> tuple[str, ...] | None:
    """The names setting ``name`` of ``config_type`` may take (declared with :func:`one_of`, or implied), or None."""
    return _choices_of(_field(config_type, name))


def setting_help(config_type: type, name: str) -> str | None:
    """What setting ``name`` of ``config_type`` means: as its field says (:func:`one_of`), else as its name implies
    (:func:`implied_help`), else None."""
    return _field(config_type, name).metadata.get("help") or implied_help(name)


# the stage a setting's first word names, as the help texts call it
STAGE_NAMES = {"pretext": "the self-supervised pretext stage", "pretrain": "the autoencoder's pretraining",
               "layerwise": "the layer-wise pretraining", "finetune": "the fine-tuning stage",
               "cluster": "the clustering stage", "self": "the self-labelling stage",
               "selflabel": "the self-labelling stage", "semi": "the semi-supervised stage",
               "period": "each period of CNN training", "unroll": "the periods of CNN training"}
# what a setting named so means, whichever method has it
HELP_BY_NAME = {
    "n_clusters": "K, the number of clusters",
    "n_neighbors": "k: how many nearest neighbours are mined for each image",
    "n_heads": "clustering heads trained side by side from different starts; the best one gives the clusters",
    "n_init": "K-means restarts; the one with the lowest within-cluster sum of squares is kept",
    "crop_min_scale": "the smallest random crop of an augmented view, as a share of the image's area; higher keeps "
                      "more of the image",
    "warmup_epochs": "epochs at the start whose learning rate rises linearly to its value",
    "queue_size": "how many keys of earlier batches the queue keeps as negatives",
    "embedding_dim": "length of the learned embedding", "feature_dim": "length of the learned feature vector",
    "dropout": "the probability that dropout zeroes a unit during training",
}


def implied_help(name: str) -> str | None:
    """What a setting means by its name: :data:`HELP_BY_NAME`, or the kind of number its last word names
    (epochs, batch size, learning rate, temperature, momentum, weight) in the stage its first word names.

    Examples:
        >>> implied_help("pretext_batch_size")
        'images per optimisation step in the self-supervised pretext stage'
        >>> implied_help("epochs")
        'passes over the images in training'
        >>> implied_help("entropy_weight"), implied_help("merge_lambda")
        ('weight of the entropy term in the loss', None)
    """
    if name in HELP_BY_NAME:
        return HELP_BY_NAME[name]
    first, _, rest = name.partition("_")
    stage = STAGE_NAMES.get(first, "training")
    subject = rest if first in STAGE_NAMES else name
    if subject == "epochs":
        return f"passes over the images in {stage}"
    if subject == "steps":
        return f"optimisation steps of {stage}"
    if subject == "batch_size":
        return f"images per optimisation step in {stage}"
    if subject == "lr":
        return f"learning rate of {stage}"
    if subject == "weight_decay":
        return f"L2 penalty on the weights in {stage}"
    if name.endswith("temperature"):
        of = name[:-len("temperature")].rstrip("_").replace("_", " ")
        return f"softmax temperature τ{f' of the {of} loss' if of else ''}: lower makes it sharper"
    if name.endswith("momentum"):
        return "EMA momentum: how much of the slow network (or average) each step keeps; closer to 1 is slower"
    if name.endswith("_weight"):
        return f"weight of the {name[:-len('_weight')].replace('_', ' ')} term in the loss"
    return None


def _field(config_type: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(config_type) if f.name == name)


def _bounds_of(field: dataclasses.Field) -> list[Bounds]:
    """The ranges a field declares (:func:`bounded`), else those its name implies."""
    declared = field.metadata.get("bounds")
    return [declared] if declared else implied_bounds(field.name)


def _choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    return field.metadata.get("choices", implied_choices(field.name))


def check_types(config: Any) -> None:
    """Raise ConfigError for a setting whose value is not of its annotated type.

    Integers must be whole numbers in 64 bits (not floats, not booleans), floats finite numbers (an integer will
    do), strings strings; ``X | None`` also takes None, and ``tuple[int, ...]`` a list or tuple of integers.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, hint = getattr(config, field.name), hints[field.name]
        if not _matches(value, hint):
            raise ConfigError(f"{field.name} must be {_expected(hint)}, got {value!r}")
        for number in value if isinstance(value, (tuple, list)) else [value]:
            if _is_float(number) and not math.isfinite(number):
                raise ConfigError(f"{field.name} must be a finite number, got {value!r}")
            if _is_int(number) and not -INT64_MAX - 1 <= number <= INT64_MAX:
                raise ConfigError(f"{field.name} must be an integer of at most 2^63 − 1 in size, got {value}")


def check_ranges(config: Any) -> None:
    """Raise ConfigError for a number outside its field's range or a name outside its field's choices.

    Call it after :func:`check_types`: it compares values it assumes are of the right type.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        choices = _choices_of(field)
        if choices is not None and value not in choices:
            raise ConfigError(f"{field.name} must be one of {', '.join(choices)}, got {value!r}")
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            continue
        for bounds in _bounds_of(field):
            if not bounds.contains(value):
                raise ConfigError(f"{field.name} must be {bounds.describe()}, got {value}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral))


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        # a stored run's config comes back from JSON with its tuples as lists
        return isinstance(value, (tuple, list)) and all(_matches(item, args[0]) for item in value)
    simple = {type(None): lambda v: v is None, bool: lambda v: isinstance(v, bool), int: _is_int,
              float: lambda v: _is_int(v) or _is_float(v), str: lambda v: isinstance(v, str)}
    if hint not in simple:
        raise TypeError(f"settings of type {hint} are not supported; use int, float, str, bool, "
                        "tuple[T, ...] or X | None")
    return simple[hint](value)


_TYPE_WORDS = {type(None): ("null", "nulls"), bool: ("true or false", "true/false values"),
               int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("text", "texts")}


def _expected(hint: Any) -> str:
    """``an integer``, ``a number``, ``text or null``, ``a list of integers``: the type in a user's words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_TYPE_WORDS[args[0]][1]}"
    return _TYPE_WORDS[hint][0]
