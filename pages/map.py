"""Map: a 2-D PaCMAP/UMAP picture of a run's features; colour by cluster, label, confidence or correctness; hover a
point to see its image, find one by index or file name, select points to list their images."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pages.audit import filter_note, image_filter, run_tags
from pages.common import pick_finished_run
from pages.map_view import show_map

st.title("Map")
results = pick_finished_run()
if results is not None:
    tags = run_tags(results)
    keep = image_filter(results, tags)
    filter_note(results, keep)
    show_map(results, np.flatnonzero(keep), tags)
