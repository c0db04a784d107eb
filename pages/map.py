"""Map: a 2-D PaCMAP/UMAP picture of a run's features; colour by cluster, label, confidence or correctness; hover a
point to see its image, find one by index or file name, select points to list their images."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ui.audit import filter_note, image_filter, run_tags
from ui.common import pick_finished_run
from ui.map_view import show_map

st.title("Map")
results = pick_finished_run()
if results is not None:
    tags = run_tags(results)
    keep = image_filter(results, tags)
    filter_note(results, keep)
    show_map(results, np.flatnonzero(keep), tags)
