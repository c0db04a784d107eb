"""Deep Clustering Explorer: ``streamlit run app.py``.

The app is a thin layer over the ``engine`` package: pages lay out widgets and call engine functions; training
runs in the engine's background JobManager, shared by every browser session of this server.
"""
import streamlit as st

st.set_page_config(page_title="Deep Clustering Explorer", layout="wide")

PAGES = [
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/neighbours.py", title="Neighbours", icon=":material/hub:"),
    st.Page("pages/clusters.py", title="Clusters", icon=":material/grid_view:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/table_chart:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]
st.navigation(PAGES).run()
