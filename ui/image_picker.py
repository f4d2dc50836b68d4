"""Choosing the photo to edit: an upload or one of the bundled examples."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.config import Settings
from core.images import ImageError, read_image
from ui import session

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "heic", "heif", "avif"]
UPLOAD_KEY = "photo_upload"
EXAMPLE_KEY = "example_choice"


def examples() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.jpg"))


def image_picker(settings: Settings) -> None:
    """Upload or example picker; a photo that fails to load leaves the current one in place."""
    upload_col, example_col = st.columns([3, 2])
    with upload_col:
        uploaded = st.file_uploader("Upload a photo", type=UPLOAD_TYPES, key=UPLOAD_KEY)
        if uploaded is not None and uploaded.file_id != session.photo_source():
            try:
                loaded = read_image(uploaded, name=uploaded.name, max_pixels=settings.max_pixels)
            except ImageError as error:
                st.error(str(error))
                if session.photo() is not None:
                    st.caption("Your current photo and its mask are unchanged.")
            else:
                session.set_photo(loaded, uploaded.file_id)
                st.rerun()  # so everything drawn before the picker (the sidebar) shows the new photo
    with example_col:
        paths = {path.stem.replace("_", " ").capitalize(): path for path in examples()}
        choice = st.selectbox("…or try an example", list(paths), index=None, key=EXAMPLE_KEY,
                              placeholder="Choose an example photo")
        if choice is not None:
            # A callback: the photo is set before the next run starts, so a click straight on to
            # another page cannot interrupt it half-way.
            st.button("Use this example", key="use_example", on_click=_use_example,
                      args=(paths[choice], settings.max_pixels))


def _use_example(path: Path, max_pixels: int) -> None:
    session.set_photo(read_image(path, max_pixels=max_pixels), f"example:{path.name}")
