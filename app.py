"""Deep Clustering Explorer: ``streamlit run app.py``.

The app is a thin layer over the ``engine`` package: pages lay out widgets and call engine functions; training
runs in the engine's background JobManager, shared by every browser session of this server.
"""
import streamlit as st

# Icons are emoji: Streamlit draws an emoji favicon itself, where a ":material/…:" icon makes the browser fetch
# the favicon from fonts.gstatic.com, which an offline server cannot reach.
st.set_page_config(page_title="Deep Clustering Explorer", page_icon="🧠", layout="wide")

PAGES = [
    st.Page("pages/train.py", title="Train", icon="🧠", default=True),
    st.Page("pages/map.py", title="Map", icon="📍"),
    st.Page("pages/neighbours.py", title="Neighbours", icon="🔗"),
    st.Page("pages/clusters.py", title="Clusters", icon="🧩"),
    st.Page("pages/compare.py", title="Compare", icon="📊"),
    st.Page("pages/export.py", title="Export", icon="📦"),
]
st.navigation(PAGES).run()
