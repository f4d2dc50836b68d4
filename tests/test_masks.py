"""Mask algebra: canvas conversion, morphology, feathering, files and layered history."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import masks
from core.masks import CanvasGeometry, MaskDocument, MaskError


def disk(size: tuple[int, int], center: tuple[int, int], radius: float) -> np.ndarray:
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2


def rect(size: tuple[int, int], box: masks.Box) -> np.ndarray:
    mask = masks.empty_mask(size)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


# --- canvas → mask ---------------------------------------------------------------------------


def paint_canvas(canvas_size: tuple[int, int], box: masks.Box, alpha: int = 153) -> np.ndarray:
    """A canvas drawing with one opaque-ish rectangle painted at ``box`` (canvas pixels)."""
    width, height = canvas_size
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    x0, y0, x1, y1 = box
    rgba[y0:y1, x0:x1] = (255, 0, 80, alpha)
    return rgba


@pytest.mark.parametrize(
    "image_size, canvas_size",
    [
        ((4000, 3000), (800, 600)),  # downscaled 5×
        ((640, 480), (640, 480)),  # 1:1
        ((300, 200), (900, 600)),  # upscaled 3×
        ((1234, 567), (700, 322)),  # non-integer scale
        ((3000, 4000), (525, 700)),  # portrait
    ],
)
def test_canvas_rectangle_lands_at_the_same_relative_place(image_size, canvas_size):
    cw, ch = canvas_size
    canvas_box = (cw // 4, ch // 5, cw // 2, ch // 2)
    geometry = CanvasGeometry.fit(image_size, canvas_size)
    mask = masks.canvas_to_mask(paint_canvas(canvas_size, canvas_box), geometry)

    assert mask.shape == (image_size[1], image_size[0])
    expected = tuple(
        round(c / s) for c, s in zip(canvas_box, (geometry.scale_x, geometry.scale_y) * 2)
    )
    got = masks.bounding_box(mask)
    # Edges land within one canvas pixel's footprint in the image.
    tolerance = max(1.0, 1.0 / min(geometry.scale_x, geometry.scale_y))
    assert all(abs(g - e) <= tolerance for g, e in zip(got, expected)), (got, expected)
    # Inside the box every pixel is painted; outside it nothing is.
    x0, y0, x1, y1 = expected
    t = int(np.ceil(tolerance))
    assert mask[y0 + t : y1 - t, x0 + t : x1 - t].all()
    outside = np.ones_like(mask)
    outside[max(0, y0 - t) : y1 + t, max(0, x0 - t) : x1 + t] = False
    assert not mask[outside].any()


def test_canvas_with_letterbox_offset_maps_through_the_offset():
    # A 200×100 photo shown at scale 2 inside a 400×300 canvas, centred vertically (offset 50).
    geometry = CanvasGeometry((200, 100), (400, 300), 2.0, 2.0, 0.0, 50.0)
    rgba = paint_canvas((400, 300), (100, 50, 140, 90), alpha=255)
    mask = masks.canvas_to_mask(rgba, geometry)
    assert masks.bounding_box(mask) == (50, 0, 70, 20)
    assert geometry.to_image(100, 50) == (50.0, 0.0)
    assert geometry.to_canvas(50, 0) == (100.0, 50.0)


def test_background_fit_of_a_downscaled_background_maps_to_full_resolution():
    # The canvas was given an 800×600 copy of a 4000×3000 photo and shows it at 0.875 scale.
    fit = {"natural_width": 800, "natural_height": 600, "scale_x": 0.875, "scale_y": 0.875,
           "offset_x": 0, "offset_y": 0}
    geometry = CanvasGeometry.from_background_fit(fit, (4000, 3000), (700, 525))
    assert geometry.scale_x == pytest.approx(700 / 4000)
    assert geometry.to_image(350, 262.5) == pytest.approx((2000, 1500))


def test_faint_antialiasing_below_threshold_is_not_painted():
    rgba = paint_canvas((100, 100), (10, 10, 20, 20), alpha=20)
    mask = masks.canvas_to_mask(rgba, CanvasGeometry.fit((100, 100), (100, 100)))
    assert not mask.any()


def test_empty_canvas_gives_empty_mask_and_bad_shape_is_refused():
    geometry = CanvasGeometry.fit((50, 40), (100, 80))
    assert not masks.canvas_to_mask(np.zeros((80, 100, 4), np.uint8), geometry).any()
    with pytest.raises(MaskError):
        masks.canvas_to_mask(np.zeros((80, 100, 3), np.uint8), geometry)


# --- morphology ------------------------------------------------------------------------------


def test_grow_is_a_disk_dilation_and_shrink_undoes_it():
    size = (200, 200)
    dot = masks.empty_mask(size)
    dot[100, 100] = True
    grown = masks.grow(dot, 10)
    assert np.array_equal(grown, disk(size, (100, 100), 10))

    square = rect(size, (50, 50, 150, 150))
    assert masks.grow(square, 5).sum() > square.sum()
    assert np.array_equal(masks.shrink(masks.grow(square, 5), 5), square)
    assert np.array_equal(masks.shrink(square, 10), rect(size, (60, 60, 140, 140)))
    assert np.array_equal(masks.grow(square, -10), masks.shrink(square, 10))


def test_shrink_does_not_erode_from_the_photo_edge():
    size = (100, 100)
    left_half = rect(size, (0, 0, 50, 100))
    assert np.array_equal(masks.shrink(left_half, 5), rect(size, (0, 0, 45, 100)))


def test_grow_near_the_edge_is_clamped_and_empty_masks_stay_empty():
    size = (60, 40)
    corner = rect(size, (0, 0, 5, 5))
    grown = masks.grow(corner, 100)
    assert grown.all()
    assert not masks.grow(masks.empty_mask(size), 10).any()
    assert not masks.shrink(rect(size, (10, 10, 14, 14)), 3).any()


def test_feather_ramps_across_the_edge_with_inner_and_outer_widths():
    size = (200, 100)
    mask = rect(size, (100, 0, 200, 100))  # right half
    alpha = masks.feather(mask, inner=10, outer=20)
    row = alpha[50]
    assert alpha.dtype == np.float32
    assert row[:79].max() == 0.0  # beyond the outer width: untouched
    assert row[111:].min() == 1.0  # deeper than the inner width: fully edited
    assert np.all(np.diff(row) >= 0)  # monotonic across the edge
    assert 0.0 < row[95] < row[105] < 1.0


def test_feather_with_zero_outer_never_touches_pixels_outside_the_mask():
    mask = disk((120, 120), (60, 60), 30)
    alpha = masks.feather(mask, inner=8, outer=0)
    assert alpha[~mask].max() == 0.0
    assert alpha[mask].min() > 0.0
    assert np.array_equal(masks.feather(mask), mask.astype(np.float32))
    with pytest.raises(MaskError):
        masks.feather(mask, inner=-1)


def test_invert_fill_holes_and_remove_islands():
    size = (100, 100)
    ring = rect(size, (20, 20, 80, 80)) & ~rect(size, (40, 40, 60, 60))
    assert np.array_equal(masks.fill_holes(ring), rect(size, (20, 20, 80, 80)))
    # A gap that touches the photo's edge is not a hole.
    notch = rect(size, (0, 0, 100, 50)) & ~rect(size, (0, 10, 10, 20))
    assert np.array_equal(masks.fill_holes(notch), notch)

    speckled = rect(size, (10, 10, 50, 50)) | rect(size, (70, 70, 72, 72))
    cleaned = masks.remove_islands(speckled, min_area=10)
    assert np.array_equal(cleaned, rect(size, (10, 10, 50, 50)))

    assert np.array_equal(masks.invert(ring), ~ring)


def test_bounding_box_and_crop_box_snap_to_multiples_and_clamp_at_edges():
    size = (1000, 600)
    mask = rect(size, (101, 203, 150, 260))
    assert masks.bounding_box(mask) == (101, 203, 150, 260)
    x0, y0, x1, y1 = masks.crop_box(mask, padding=32)
    assert (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0
    assert x0 <= 101 - 32 and y0 <= 203 - 32 and x1 >= 150 + 32 and y1 >= 260 + 32

    # At the bottom-right corner the box shifts inward instead of leaving the photo.
    corner = rect(size, (990, 590, 1000, 600))
    x0, y0, x1, y1 = masks.crop_box(corner, padding=32)
    assert (x1, y1) == (1000, 600)
    assert (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0
    assert x0 <= 990 - 32 and y0 <= 590 - 32

    # Where a snapped side would not fit, the whole side is used rather than cutting the mask.
    small = rect((13, 13), (2, 2, 11, 11))
    assert masks.crop_box(small, padding=32) == (0, 0, 13, 13)
    assert masks.crop_box(rect((13, 13), (2, 2, 5, 5)), padding=0) == (2, 2, 10, 10)
    assert masks.crop_box(masks.empty_mask(size)) is None


def test_mask_size_mismatch_is_a_clear_error():
    with pytest.raises(MaskError, match="100×50"):
        masks.check_mask(np.zeros((50, 100), bool), size=(200, 100))


# --- files -----------------------------------------------------------------------------------


def test_mask_from_white_on_black_image_and_from_alpha():
    size = (40, 30)
    gray = np.zeros((30, 40), np.uint8)
    gray[5:15, 10:20] = 255
    mask = masks.mask_from_image(Image.fromarray(gray, "L"), size)
    assert np.array_equal(mask, rect(size, (10, 5, 20, 15)))

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[5:15, 10:20, 3] = 255
    image = Image.fromarray(rgba, "RGBA")
    assert np.array_equal(masks.mask_from_image(image, size), rect(size, (10, 5, 20, 15)))
    inverted = masks.mask_from_image(image, size, source="alpha_inverted")
    assert np.array_equal(inverted, ~rect(size, (10, 5, 20, 15)))
    with pytest.raises(MaskError, match="no transparency"):
        masks.mask_from_image(Image.fromarray(gray, "L"), size, source="alpha")


def test_mask_file_of_another_size_is_refused_unless_resized():
    small = Image.fromarray(np.full((15, 20), 255, np.uint8), "L")
    with pytest.raises(MaskError, match=r"20×15 but the photo is 40×30"):
        masks.mask_from_image(small, (40, 30), name="mask.png")
    resized = masks.mask_from_image(small, (40, 30), resize=True)
    assert resized.shape == (30, 40) and resized.all()


def test_encode_mask_png_round_trips_hard_and_soft_masks():
    mask = rect((32, 16), (4, 4, 12, 12))
    decoded = np.asarray(Image.open(io.BytesIO(masks.encode_mask_png(mask))))
    assert decoded.dtype == np.uint8 and set(np.unique(decoded)) == {0, 255}
    assert np.array_equal(decoded > 127, mask)
    soft = masks.feather(mask, inner=2, outer=2)
    decoded_soft = np.asarray(Image.open(io.BytesIO(masks.encode_mask_png(soft))))
    assert np.abs(decoded_soft / 255.0 - soft).max() <= 0.5 / 255 + 1e-6


def test_overlay_tints_only_the_masked_region():
    image = Image.new("RGB", (40, 40), (0, 128, 0))
    mask = rect((40, 40), (10, 10, 30, 30))
    out = np.asarray(masks.overlay(image, mask, color=(255, 0, 0), opacity=0.5, outline=False))
    assert tuple(out[0, 0]) == (0, 128, 0)
    assert out[20, 20, 0] > 100 and out[20, 20, 1] < 100
    # A full-resolution mask shown over a downscaled preview is resized to it.
    preview = masks.overlay(image.resize((20, 20)), mask, outline=False)
    assert preview.size == (20, 20)


# --- history ---------------------------------------------------------------------------------


def test_packed_mask_round_trips():
    mask = disk((300, 200), (150, 100), 40)
    packed = masks.PackedMask.pack(mask)
    assert np.array_equal(packed.unpack(), mask)
    assert len(packed.bits) < mask.size // 8
    assert not masks.PackedMask.pack(masks.empty_mask((10, 10))).unpack().any()


def test_layers_union_and_subtract_with_undo_and_redo():
    size = (100, 100)
    doc = MaskDocument(size)
    a = rect(size, (10, 10, 50, 50))
    b = rect(size, (40, 40, 90, 90))
    eraser = rect(size, (0, 0, 100, 45))

    revisions = {doc.revision}
    doc.apply(masks.layer_edit("add", a, "brush"))
    doc.apply(masks.layer_edit("add", b, "brush"))
    assert np.array_equal(doc.mask, a | b)
    revisions.add(doc.revision)
    doc.apply(masks.layer_edit("subtract", eraser, "eraser"))
    assert np.array_equal(doc.mask, (a | b) & ~eraser)
    doc.apply(masks.operation_edit("invert"))
    assert np.array_equal(doc.mask, ~((a | b) & ~eraser))
    assert doc.history == ["brush", "brush", "eraser", "invert"]

    revisions.add(doc.revision)
    assert doc.undo() and doc.undo()
    assert np.array_equal(doc.mask, a | b)
    assert doc.revision not in revisions
    revisions.add(doc.revision)
    assert doc.can_redo
    assert doc.redo()
    assert doc.revision not in revisions
    assert np.array_equal(doc.mask, (a | b) & ~eraser)
    # A new edit drops what could be redone.
    doc.apply(masks.operation_edit("grow", 3))
    assert not doc.can_redo and not doc.redo()
    assert np.array_equal(doc.mask, masks.grow((a | b) & ~eraser, 3))

    while doc.undo():
        pass
    assert not doc.mask.any() and not doc.can_undo


def test_replace_and_clear_start_over():
    size = (50, 50)
    doc = MaskDocument(size)
    doc.apply(masks.layer_edit("add", rect(size, (0, 0, 10, 10)), "brush"))
    doc.apply(masks.layer_edit("replace", rect(size, (20, 20, 30, 30)), "segment"))
    assert np.array_equal(doc.mask, rect(size, (20, 20, 30, 30)))
    doc.apply(masks.operation_edit("clear"))
    assert not doc.mask.any()
    doc.undo()
    assert np.array_equal(doc.mask, rect(size, (20, 20, 30, 30)))


def test_history_is_bounded_but_the_mask_is_exact():
    size = (64, 64)
    doc = MaskDocument(size, max_history=5)
    expected = masks.empty_mask(size)
    for i in range(12):
        layer = rect(size, (i * 5, i * 5, i * 5 + 4, i * 5 + 4))
        doc.apply(masks.layer_edit("add", layer, f"stroke {i}"))
        expected |= layer
    assert len(doc.history) == 5
    assert np.array_equal(doc.mask, expected)
    for _ in range(5):
        assert doc.undo()
    assert not doc.undo()  # older steps were squashed into the base
    assert doc.mask.sum() == 7 * 16


def test_layer_of_another_size_is_refused():
    doc = MaskDocument((50, 50))
    with pytest.raises(MaskError, match="photo is 50×50"):
        doc.apply(masks.layer_edit("add", np.ones((10, 10), bool), "brush"))
    with pytest.raises(MaskError):
        masks.operation_edit("paint")


def test_mask_from_a_split_off_alpha_band():
    size = (20, 10)
    rgb = Image.new("RGB", size, (0, 0, 0))
    alpha = np.zeros((10, 20), np.uint8)
    alpha[:, :5] = 255
    mask = masks.mask_from_image(rgb, size, alpha=Image.fromarray(alpha, "L"))
    assert np.array_equal(mask, rect(size, (0, 0, 5, 10)))


def test_feather_band_is_exactly_the_grown_mask():
    mask = disk((200, 160), (100, 80), 30)
    for outer in (1, 5, 8, 17):
        alpha = masks.feather(mask, inner=3, outer=outer)
        assert np.array_equal(alpha > 0, masks.grow(mask, outer))
