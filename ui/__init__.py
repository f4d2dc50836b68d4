"""Streamlit glue shared by the pages: session state, cached resources, widgets.

Besides ``pages/`` and ``streamlit_app.py``, this is the only package that imports streamlit.
"""
