"""Small helpers the pages share."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from pages.common import format_seconds  # noqa: E402


@pytest.mark.parametrize("seconds, text", [(None, "—"), (42.4, "42 s"), (185, "3 min 05 s"),
                                           (2 * 3600 + 7 * 60, "2 h 07 min"), (39000 * 60, "27 d 2 h")])
def test_durations_read_in_the_largest_sensible_units(seconds, text):
    assert format_seconds(seconds) == text
