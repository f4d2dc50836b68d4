"""The before / after slider: one self-contained page, nothing fetched from the network."""
from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from ui.compare import slider_html


def pictures():
    return Image.new("RGB", (40, 30), (200, 30, 30)), Image.new("RGB", (40, 30), (30, 30, 200))


def test_both_pictures_are_inlined_and_nothing_is_fetched():
    before, after = pictures()
    page = slider_html(before, after, max_width=400, after_label="After <3")
    urls = re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', page)
    assert len(urls) == 2
    colours = [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).getpixel((20, 15)) for url in urls]
    # The after picture lies underneath, the before one is clipped over it.
    assert colours[0][2] > 150 and colours[1][0] > 150
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert "After &lt;3" in page and 'type="range"' in page and "aspect-ratio: 40 / 30" in page


def test_pictures_of_different_shapes_are_refused():
    before, _ = pictures()
    with pytest.raises(ValueError, match="same size"):
        slider_html(before, Image.new("RGB", (60, 30)), max_width=400)
