"""Deep Clustering Explorer: ``streamlit run app.py``.

The app is a thin layer over the ``engine`` package: pages lay out widgets and call engine functions; training
runs in the engine's background JobManager, shared by every browser session of this server.
"""
import streamlit as st

st.set_page_config(page_title="Deep Clustering Explorer", layout="wide")

navigation = st.navigation([
    st.Page("pages/train.py", title="Train", icon=":material/model_training:", default=True),
])
navigation.run()
