"""Before / after as one picture with a slider: drag across it to wipe from the photo to the result.

Plain HTML, CSS and a few lines of script in the page's own iframe (``st.components.v1.html``), with
both pictures inlined as data URLs: nothing is fetched from anywhere, so it works offline and behind a
firewall. (The PyPI component for this loads its script from a CDN.) Keyboard: the slider is a range
input, so Tab to it and use the arrow keys.
"""
from __future__ import annotations

import base64
import html
import io

import streamlit as st
import streamlit.components.v1 as components
from PIL import Image

_TEMPLATE = """<!doctype html>
<style>
  html, body {{ margin: 0; background: transparent; font: 13px sans-serif; }}
  .wipe {{ position: relative; width: 100%; max-width: {max_width}px; aspect-ratio: {width} / {height}; overflow: hidden;
           touch-action: none; cursor: ew-resize; user-select: none; }}
  .wipe img {{ position: absolute; inset: 0; width: 100%; height: 100%; display: block; }}
  .wipe .before {{ clip-path: inset(0 calc(100% - var(--at)) 0 0); }}
  .wipe .line {{ position: absolute; top: 0; bottom: 0; left: var(--at); width: 2px; margin-left: -1px;
                 background: #fff; box-shadow: 0 0 3px #000; pointer-events: none; }}
  .wipe .label {{ position: absolute; top: 6px; padding: 1px 6px; border-radius: 3px;
                  background: rgba(0, 0, 0, .55); color: #fff; pointer-events: none; }}
  input {{ width: 100%; max-width: {max_width}px; margin: 6px 0 0; display: block; }}
</style>
<div class="wipe" id="wipe" style="--at: 50%">
  <img class="after" alt="{after_label}" src="{after}">
  <img class="before" alt="{before_label}" src="{before}">
  <div class="line"></div>
  <span class="label" style="left: 6px">{before_label}</span>
  <span class="label" style="right: 6px">{after_label}</span>
</div>
<input type="range" id="at" min="0" max="100" step="0.5" value="50" aria-label="Before / after">
<script>
  const wipe = document.getElementById("wipe"), range = document.getElementById("at");
  const show = (percent) => {{ wipe.style.setProperty("--at", percent + "%"); range.value = percent; }};
  range.addEventListener("input", () => show(range.value));
  const follow = (event) => {{
    const box = wipe.getBoundingClientRect();
    show(Math.max(0, Math.min(100, 100 * (event.clientX - box.left) / box.width)));
  }};
  wipe.addEventListener("pointerdown", (event) => {{ wipe.setPointerCapture(event.pointerId); follow(event); }});
  wipe.addEventListener("pointermove", (event) => {{ if (event.buttons) follow(event); }});
</script>
"""


def data_url(image: Image.Image, quality: int = 90) -> str:
    """``image`` as an inline JPEG data URL (a display copy: small and quick to send)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def slider_html(before: Image.Image, after: Image.Image, *, max_width: int, before_label: str = "Before",
                after_label: str = "After") -> str:
    """The self-contained page of the slider. ``before`` and ``after`` are display copies of the
    same size (ValueError otherwise: a wipe between pictures of different shapes means nothing)."""
    if before.size != after.size:
        raise ValueError(f"before {before.size} and after {after.size} must be the same size for a wipe")
    return _TEMPLATE.format(max_width=max_width, width=before.width, height=before.height, before=data_url(before),
                            after=data_url(after), before_label=html.escape(before_label),
                            after_label=html.escape(after_label))


def comparison(before: Image.Image, after: Image.Image, *, width: int, after_label: str = "After") -> None:
    """Show ``before`` / ``after`` (display copies) as one picture with a slider, ``width`` pixels
    wide at most; side by side instead when their shapes differ (an extended canvas)."""
    if before.size != after.size:
        before_col, after_col = st.columns(2)
        before_col.image(before, caption="Before")
        after_col.image(after, caption=after_label)
        return
    shown = min(width, after.width)
    height = round(shown * after.height / after.width) + 34  # the picture and the range input under it
    components.html(slider_html(before, after, max_width=shown, after_label=after_label), height=height)
