"""The UI pieces several pages share (run pickers, the live run view, the audit filter and tag panel, the Map's
parts). They live outside ``pages/``, which holds only the pages ``app.py`` lists in ``st.navigation``.

No folder of the app may be named ``pages``: Streamlit treats a ``pages/`` folder beside the main script as an
old-style multipage app until ``st.navigation`` first runs in the server process, so the first visit after a
restart to a deep link (``/clusters``) runs that page alone and lists every file of the folder in the sidebar.
"""
