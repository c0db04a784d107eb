"""Numbers in sentences, shared by the engine's messages, the pages and the exports."""
from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, plural unless ``n`` is one.

    Examples:
        >>> count(1, "image"), count(0, "image"), count(12, "match", "matches")
        ('1 image', '0 images', '12 matches')
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
