"""Selection logic on synthetic candidate masks: points, stepping, negatives, unions, boxes, text."""
from __future__ import annotations

import numpy as np
import pytest

from core.segment import (
    CandidateSet,
    SegmentError,
    SegmentPrompt,
    exclude_points,
    points_message,
    select_box,
    select_positive,
    top_k_by_text,
)

SIZE = (200, 100)  # work size = image size unless a test says otherwise


def select_points(candidates, positive, negative, step=0):
    """Points as the segmenter answers them: positive points select (select_positive), negative
    points then exclude (exclude_points, protecting every candidate under a positive point).
    Returns the mask, the chosen indices, the number of step levels and the message."""
    mask, chosen, levels, missed = select_positive(candidates, positive, step)
    protected = {int(i) for x, y in positive for i in candidates.containing(x, y)}
    mask, stuck = exclude_points(candidates, mask, negative, protected)
    return mask, chosen, levels, points_message(missed, len(positive), stuck)


def rect(box, size=SIZE):
    width, height = size
    mask = np.zeros((height, width), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def scene() -> tuple[CandidateSet, dict[str, int]]:
    """A table (large) with a plate on it, a cup on the plate, and a separate lamp."""
    masks = {
        "table": rect((10, 40, 190, 95)),
        "plate": rect((40, 50, 100, 80)),
        "cup": rect((60, 55, 80, 70)),
        "lamp": rect((150, 5, 170, 35)),
    }
    candidates = CandidateSet.from_masks(np.stack(list(masks.values())), [0.9, 0.8, 0.7, 0.6], SIZE)
    return candidates, {name: i for i, name in enumerate(masks)}


def test_candidate_set_keeps_crops_boxes_and_areas():
    candidates, index = scene()
    assert len(candidates) == 4
    assert tuple(candidates.boxes[index["cup"]]) == (60, 55, 80, 70)
    assert candidates.areas[index["cup"]] == 20 * 15
    assert np.array_equal(candidates.mask(index["plate"]), rect((40, 50, 100, 80)))
    # Crops, not full masks: memory follows the objects' extents.
    assert candidates.nbytes < 4 * SIZE[0] * SIZE[1]


def test_empty_masks_are_dropped_and_an_empty_set_works():
    masks = np.stack([rect((0, 0, 5, 5)), np.zeros((100, 200), bool)])
    assert len(CandidateSet.from_masks(masks, None, SIZE)) == 1
    empty = CandidateSet.from_masks(np.zeros((0, 100, 200), bool), [], SIZE)
    assert len(empty) == 0
    assert empty.containing(10, 10).size == 0
    mask, iou, best = select_box(empty, (0, 0, 10, 10))
    assert not mask.any() and iou == 0 and best is None


def test_containing_lists_smallest_first():
    candidates, index = scene()
    assert candidates.containing(70, 60).tolist() == [index["cup"], index["plate"], index["table"]]
    assert candidates.containing(5, 5).tolist() == []


def test_near_duplicate_candidates_are_one_step():
    masks = np.stack([rect((10, 10, 50, 50)), rect((10, 10, 50, 51)), rect((0, 0, 80, 80))])
    candidates = CandidateSet.from_masks(masks, None, SIZE)
    assert candidates.containing(20, 20).tolist() == [0, 1, 2]
    assert candidates.levels_at(20, 20).tolist() == [0, 2]
    assert select_points(candidates, [(20, 20)], [], step=1)[1] == [2]


def test_a_click_picks_the_smallest_candidate_and_steps_to_larger_ones():
    candidates, index = scene()
    mask, chosen, levels, message = select_points(candidates, [(70, 60)], [], step=0)
    assert chosen == [index["cup"]] and levels == 3 and message == ""
    assert np.array_equal(mask, rect((60, 55, 80, 70)))
    _, chosen, _, _ = select_points(candidates, [(70, 60)], [], step=1)
    assert chosen == [index["plate"]]
    # Stepping past the largest stays on the largest; negative steps stay on the smallest.
    assert select_points(candidates, [(70, 60)], [], step=9)[1] == [index["table"]]
    assert select_points(candidates, [(70, 60)], [], step=-3)[1] == [index["cup"]]


def test_several_positive_points_union_their_objects():
    candidates, index = scene()
    mask, chosen, _, _ = select_points(candidates, [(70, 60), (160, 20)], [])
    assert sorted(chosen) == sorted([index["cup"], index["lamp"]])
    assert np.array_equal(mask, rect((60, 55, 80, 70)) | rect((150, 5, 170, 35)))


def test_a_negative_point_removes_a_part_but_never_the_clicked_object():
    candidates, index = scene()
    # Select the plate (step 1 at the cup), exclude the cup: plate minus cup.
    mask, _, _, message = select_points(candidates, [(45, 75)], [(70, 60)])
    assert np.array_equal(mask, rect((40, 50, 100, 80)) & ~rect((60, 55, 80, 70)))
    assert message == ""
    # A negative click on the very object that was clicked cannot remove it: it stays, with a hint.
    mask, _, _, message = select_points(candidates, [(70, 60)], [(75, 65)])
    assert np.array_equal(mask, rect((60, 55, 80, 70)))
    assert "eraser" in message


def test_a_click_on_nothing_says_so():
    candidates, _ = scene()
    mask, chosen, levels, message = select_points(candidates, [(5, 5)], [])
    assert not mask.any() and chosen == [] and levels == 0
    assert "No object was found under 1 of the 1 clicks" in message


def test_box_picks_the_highest_iou_candidate_and_can_clip_to_the_box():
    candidates, index = scene()
    mask, iou, best = select_box(candidates, (38, 48, 102, 82))
    assert best == index["plate"] and iou == pytest.approx((60 * 30) / (64 * 34))
    assert np.array_equal(mask, rect((40, 50, 100, 80)))
    clipped, _, _ = select_box(candidates, (38, 48, 70, 82), clip_to_box=True)
    assert clipped.any() and not clipped[:, 70:].any()
    nothing, iou, best = select_box(candidates, (0, 0, 5, 5))
    assert not nothing.any() and best is None


def test_box_iou_matches_a_direct_computation():
    candidates, _ = scene()
    box = (30, 30, 120, 90)
    box_mask = rect(box)
    for i, iou in enumerate(candidates.box_iou(box)):
        mask = candidates.mask(i)
        expected = (mask & box_mask).sum() / (mask | box_mask).sum()
        assert iou == pytest.approx(expected)


def test_top_k_by_text_orders_by_similarity_with_softmax_probabilities():
    similarities = np.array([0.10, 0.31, 0.25, 0.30])
    order, probabilities = top_k_by_text(similarities, logit_scale=100.0, top_k=3)
    assert order.tolist() == [1, 3, 2]
    assert probabilities[0] > probabilities[1] > probabilities[2]
    full = top_k_by_text(similarities, 100.0, top_k=10)[1]
    assert full.sum() == pytest.approx(1.0)
    assert top_k_by_text(np.zeros(0), 100.0, 3)[0].size == 0


def test_work_resolution_maps_to_and_from_the_photo():
    masks = rect((10, 10, 30, 20), size=(50, 25))[None]
    candidates = CandidateSet.from_masks(masks, None, image_size=(200, 100))
    assert candidates.to_work(199.9, 99.9) == (49, 24)
    assert candidates.to_work(40, 40) == (10, 10)
    assert candidates.box_to_work((40, 40, 120, 80)) == (10, 10, 30, 20)
    full = candidates.to_image(candidates.mask(0))
    assert full.shape == (100, 200)
    ys, xs = np.nonzero(full)
    assert abs(xs.min() - 40) <= 2 and abs(xs.max() - 119) <= 2 and abs(ys.min() - 40) <= 2


def test_prompt_validation_and_checking_against_the_photo():
    prompt = SegmentPrompt(points=((10, 10, 1), (500, 10, 1), (-1, 5, 0)), box=(80, 60, 20, 10))
    assert prompt.box == (20.0, 10.0, 80.0, 60.0)  # corners in any order
    checked = prompt.checked_for((100, 50))
    assert checked.points == ((10.0, 10.0, 1),)
    assert checked.box == (20.0, 10.0, 80.0, 50.0)
    with pytest.raises(SegmentError, match="no area"):
        SegmentPrompt(box=(10, 10, 10, 40)).checked_for((100, 50))
    with pytest.raises(SegmentError, match="no area"):
        SegmentPrompt(box=(200, 10, 300, 40)).checked_for((100, 50))
    with pytest.raises(SegmentError):
        SegmentPrompt(points=((1, 1, 2),))
    with pytest.raises(SegmentError):
        SegmentPrompt(backend="magic")
    assert SegmentPrompt(text="  cat ").text == "cat"
    assert SegmentPrompt().is_empty


def test_prompt_round_trips_through_a_dict():
    prompt = SegmentPrompt(points=((1, 2, 1), (3, 4, 0)), box=(0, 0, 5, 5), text="cup", top_k=2, step=1)
    assert SegmentPrompt.from_dict(prompt.to_dict()) == prompt
