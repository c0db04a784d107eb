"""The UI pieces several pages share (run pickers, the live run view, the audit filter and tag panel, the Map's
parts). They live outside ``pages/``, which holds only the pages ``app.py`` lists in ``st.navigation``.

Streamlit treats a ``pages/`` folder beside the main script as an old-style multipage app until ``st.navigation``
first runs in the server process: the first visit after a restart to a deep link (``/clusters``) runs that page
alone, without ``app.py`` (narrow layout, no logo, every file of the folder listed in the sidebar), and so does
every later deep link until someone opens ``/``. The product's layout fixes the folder's name, so the first page
that imports this package in that mode turns it off and reruns: ``app.py`` then runs, and its ``st.navigation``
shows the page the link asked for.
"""
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

# (a Streamlit without the flag has no such mode to leave: nothing to do)
if getattr(PagesManager, "uses_pages_directory", False) and get_script_run_ctx() is not None:
    PagesManager.uses_pages_directory = False
    st.rerun()
