"""Mask: paint and erase the region to edit, refine its edge, download it."""
import streamlit as st

from core import masks
from core.images import ImageError, read_image
from core.masks import overlay
from ui import forms, previews, session
from ui.canvas import canvas_size, mask_canvas
from ui.page import require_photo, setup_page

settings = setup_page("Mask", "🖌️")
st.title("Mask")
require_photo()
loaded = session.photo()
document = session.mask_document()


def apply_operation(kind: str, amount: int = 0) -> None:
    document.apply(masks.operation_edit(kind, amount))


def apply_grow_preview() -> None:
    amount = st.session_state[forms.GROW_PREVIEW]
    if amount:
        apply_operation("grow" if amount > 0 else "shrink", abs(amount))
    st.session_state[forms.GROW_PREVIEW] = 0


canvas_col, controls_col = st.columns([3, 1], gap="medium")

with controls_col:
    tool = st.segmented_control("Tool", ["Paint", "Erase"], key=forms.MASK_TOOL, required=True)
    brush = st.slider("Brush size (screen px)", 2, 200, key=forms.BRUSH_SIZE)
    undo_col, redo_col, clear_col = st.columns(3)
    undo_col.button("Undo", on_click=document.undo, disabled=not document.can_undo, width="stretch")
    redo_col.button("Redo", on_click=document.redo, disabled=not document.can_redo, width="stretch")
    clear_col.button("Clear", on_click=apply_operation, args=("clear",),
                     disabled=not document.mask.any(), width="stretch")

    st.subheader("Refine")
    grow_px = st.slider("Grow (+) / shrink (−) px", -100, 100, key=forms.GROW_PREVIEW,
                        help="Previewed live; Apply adds it to the history.")
    st.button("Apply grow / shrink", on_click=apply_grow_preview, disabled=grow_px == 0)
    invert_col, holes_col = st.columns(2)
    invert_col.button("Invert", on_click=apply_operation, args=("invert",), width="stretch",
                      help="Edit the background instead of the subject.")
    holes_col.button("Fill holes", on_click=apply_operation, args=("fill_holes",), width="stretch")
    islands = st.number_input("Smallest island kept (px)", 1, 1_000_000, key=forms.ISLAND_AREA)
    st.button("Remove smaller islands", on_click=apply_operation, args=("remove_islands", islands))

    st.subheader("Soft edge")
    inner = st.slider("Feather inside (px)", 0, 100, key=forms.FEATHER_INNER)
    outer = st.slider("Feather outside (px)", 0, 100, key=forms.FEATHER_OUTER)

    st.subheader("View")
    width = st.slider("Canvas width (px)", 300, 1600, step=50, key=forms.CANVAS_WIDTH)

mask, soft = previews.mask_preview(grow_px, inner, outer)

with canvas_col:
    size = canvas_size(loaded.size, width)
    stroke = mask_canvas(overlay(session.display_copy(size[0]), soft), tool=tool, brush=brush)
    if stroke is not None:
        kind, label = ("add", "brush stroke") if tool == "Paint" else ("subtract", "eraser stroke")
        document.apply(masks.layer_edit(kind, stroke, label))
        session.bump_canvas()
        st.rerun()
    box = masks.bounding_box(mask)
    if box is None:
        st.caption("The mask is empty: paint over the region you want to change.")
    else:
        st.caption(
            f"Mask covers {mask.mean():.1%} of the photo · box {box[0]},{box[1]} → {box[2]},{box[3]} "
            f"· {len(document.history)} edit{'s' if len(document.history) != 1 else ''}"
        )

with controls_col:
    st.subheader("Mask file")
    stem = (loaded.name or "photo").rsplit(".", 1)[0]
    mask_png, soft_png = previews.mask_files(grow_px, inner, outer) if box is not None else (b"", b"")
    st.download_button("Download mask (PNG)", mask_png, file_name=f"{stem}-mask.png", mime="image/png",
                       on_click="ignore", disabled=box is None, key="download_mask")
    st.download_button("Download soft mask (PNG)", soft_png, file_name=f"{stem}-mask-soft.png",
                       mime="image/png", on_click="ignore", disabled=box is None, key="download_soft_mask")
    with st.expander("Upload a mask"):
        upload = st.file_uploader("Mask image", type=["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"],
                                  key="mask_upload")
        source = st.radio("Which pixels are edited", ["auto", "luminance", "alpha", "alpha_inverted"],
                          format_func={"auto": "Automatic", "luminance": "White = edit",
                                       "alpha": "Opaque = edit",
                                       "alpha_inverted": "Transparent = edit"}.get,
                          key="mask_upload_source")
        resize = st.checkbox("Resize it to the photo if the sizes differ", key="mask_upload_resize")
        if st.button("Use this mask", disabled=upload is None):
            try:
                mask_file = read_image(upload, max_pixels=settings.max_pixels)
                uploaded_mask = masks.mask_from_image(
                    mask_file.rgb, loaded.size, alpha=mask_file.alpha, source=source,
                    resize=resize, name=upload.name,
                )
            except (ImageError, masks.MaskError) as error:
                st.error(str(error))
            else:
                document.apply(masks.layer_edit("replace", uploaded_mask, f"uploaded {upload.name}"))
                st.rerun()
    with st.expander(f"History ({len(document.history)} edits)"):
        for number, label in enumerate(document.history, start=1):
            st.text(f"{number}. {label}")
