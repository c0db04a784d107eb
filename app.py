"""Deep Clustering Explorer: ``streamlit run app.py``.

The app is a thin layer over the ``engine`` package: pages lay out widgets and call engine functions; training
runs in the engine's background JobManager, shared by every browser session of this server.
"""
from pathlib import Path

import streamlit as st

ASSETS = Path(__file__).resolve().parent / "assets"

# The favicon and logo are the app's own files, served by this server. Page icons are Material Symbols, whose font
# Streamlit serves itself: they draw offline and in any browser (emoji showed as boxes where no emoji font is
# installed). Only a material *favicon* would be fetched from fonts.gstatic.com, hence the page_icon file.
st.set_page_config(page_title="Deep Clustering Explorer", page_icon=str(ASSETS / "icon.png"), layout="wide")
st.logo(str(ASSETS / "icon.png"))

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/neighbours.py", title="Neighbours", icon=":material/hub:"),
    st.Page("pages/clusters.py", title="Clusters", icon=":material/grid_view:"),
    st.Page("pages/suspects.py", title="Suspects", icon=":material/search:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]
# Streamlit takes the pages/ folder for an old-style multipage app until this st.navigation first runs in the
# server process; the first page to import ui/ turns that off (see ui/__init__), so a deep link shows this app.
st.navigation(PAGES).run()
