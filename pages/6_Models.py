"""Models: every model the app can use, whether it is here, and downloading or deleting it."""
import streamlit as st

from ui.model_downloads import models_page
from ui.page import setup_page

setup_page("Models", ":material/download:")
st.title("Models")
models_page()
