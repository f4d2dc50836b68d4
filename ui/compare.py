"""Before / after as one picture with a slider: drag across it to wipe from the photo to the result.

Plain HTML, CSS and a few lines of script placed in the page (``st.html``: as wide as its column, as
tall as the picture), with both pictures inlined as data URLs: nothing is fetched from anywhere, so it
works offline and behind a firewall. (The PyPI component for this loads its script from a CDN.)
Keyboard: the slider is a range input, so Tab to it and use the arrow keys. Class names and ids carry
an ``ips-`` prefix and a digest of the pictures, so two sliders on a page do not mix.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io

import streamlit as st
from PIL import Image

_TEMPLATE = """<style>
  .ips-wipe {{ position: relative; width: 100%; max-width: {max_width}px; aspect-ratio: {width} / {height};
               overflow: hidden; touch-action: none; cursor: ew-resize; user-select: none; }}
  .ips-wipe img {{ position: absolute; inset: 0; width: 100%; height: 100%; display: block; margin: 0; }}
  .ips-wipe .ips-before {{ clip-path: inset(0 calc(100% - var(--at)) 0 0); }}
  .ips-wipe .ips-line {{ position: absolute; top: 0; bottom: 0; left: var(--at); width: 2px; margin-left: -1px;
                         background: #fff; box-shadow: 0 0 3px #000; pointer-events: none; }}
  .ips-wipe .ips-label {{ position: absolute; top: 6px; padding: 1px 6px; border-radius: 3px; font-size: 13px;
                          background: rgba(0, 0, 0, .55); color: #fff; pointer-events: none; }}
  .ips-range {{ width: 100%; max-width: {max_width}px; margin: 6px 0 0; display: block; }}
</style>
<div class="ips-wipe" id="ips-wipe-{uid}" style="--at: 50%">
  <img class="ips-after" alt="{after_label}" src="{after}">
  <img class="ips-before" alt="{before_label}" src="{before}">
  <div class="ips-line"></div>
  <span class="ips-label" style="left: 6px">{before_label}</span>
  <span class="ips-label" style="right: 6px">{after_label}</span>
</div>
<input class="ips-range" type="range" id="ips-at-{uid}" min="0" max="100" step="0.5" value="50"
       aria-label="Before / after">
<script>
  (() => {{
    const wipe = document.getElementById("ips-wipe-{uid}"), range = document.getElementById("ips-at-{uid}");
    if (!wipe || !range) return;
    const show = (percent) => {{ wipe.style.setProperty("--at", percent + "%"); range.value = percent; }};
    range.addEventListener("input", () => show(range.value));
    const follow = (event) => {{
      const box = wipe.getBoundingClientRect();
      show(Math.max(0, Math.min(100, 100 * (event.clientX - box.left) / box.width)));
    }};
    wipe.addEventListener("pointerdown", (event) => {{ wipe.setPointerCapture(event.pointerId); follow(event); }});
    wipe.addEventListener("pointermove", (event) => {{ if (event.buttons) follow(event); }});
  }})();
</script>
"""


def data_url(image: Image.Image, quality: int = 90) -> str:
    """``image`` as an inline JPEG data URL (a display copy: small and quick to send)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def slider_html(before: Image.Image, after: Image.Image, *, max_width: int, before_label: str = "Before",
                after_label: str = "After") -> str:
    """The slider as HTML with its style and script. ``before`` and ``after`` are display copies of the
    same size (ValueError otherwise: a wipe between pictures of different shapes means nothing)."""
    if before.size != after.size:
        raise ValueError(f"before {before.size} and after {after.size} must be the same size for a wipe")
    before_url, after_url = data_url(before), data_url(after)
    uid = hashlib.sha1((before_url + after_url).encode("ascii")).hexdigest()[:12]
    return _TEMPLATE.format(max_width=max_width, width=before.width, height=before.height, before=before_url,
                            after=after_url, uid=uid, before_label=html.escape(before_label),
                            after_label=html.escape(after_label))


def comparison(before: Image.Image, after: Image.Image, *, width: int, after_label: str = "After") -> None:
    """Show ``before`` / ``after`` (display copies) as one picture with a slider, ``width`` pixels
    wide at most; side by side instead when their shapes differ (an extended canvas)."""
    if before.size != after.size:
        before_col, after_col = st.columns(2)
        before_col.image(before, caption="Before")
        after_col.image(after, caption=after_label)
        return
    st.html(slider_html(before, after, max_width=min(width, after.width), after_label=after_label),
            unsafe_allow_javascript=True)
