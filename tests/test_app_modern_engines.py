"""AppTest runs of the Inpaint page with the newer engines (tiny random pipelines): the engine picker
grouped by what engines do, FLUX.2 [klein] first where it fits, its reference picture, and
Qwen-Image-Edit's instruction mode."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.helpers import inpaint_page, make_photo, region
from ui import forms, session

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def modern(app_with_tiny_models, tiny_modern_models):
    for role, path in tiny_modern_models.items():
        app_with_tiny_models.setenv(f"INPAINT_STUDIO_MODEL_{role.upper()}", str(path))
    return app_with_tiny_models


def button(at, label: str):
    return next(b for b in at.button if b.label == label)


def quick(at, steps: int = 2):
    """Two steps, one variant: the tiny pipelines at the engines' native 1024 px take a while on a CPU."""
    at.slider(key=forms.INPAINT_STEPS).set_value(steps)
    at.slider(key=forms.INPAINT_VARIANTS).set_value(1)
    return at


def unchanged_beyond_the_edge(image: Image.Image, blur: int) -> bool:
    from core import masks

    band = masks.grow(region(), blur)
    return np.array_equal(np.asarray(image)[~band], np.asarray(make_photo())[~band])


def test_the_picker_groups_engines_and_starts_on_flux2_klein_with_its_own_defaults(modern):
    at = inpaint_page()
    assert not at.exception
    engine = at.selectbox(key=forms.INPAINT_ENGINE)
    assert engine.value == "flux2_klein"  # the best diffusion engine that fits
    options = engine.options
    assert options[:3] == ["Fill · FLUX.2 [klein] 4B", "Fill · FLUX.1 Fill [dev]", "Fill or instruct · Qwen-Image-Edit"]
    assert "Remove · LaMa" in options
    assert at.slider(key=forms.INPAINT_STEPS).value == 4  # klein is step-distilled
    assert any("licence: Apache-2.0" in c.value for c in at.caption)
    assert not any(s.key == forms.INPAINT_MODE for s in at.get("button_group"))  # klein takes no instruction
    engine.set_value("flux_fill").run()
    assert at.slider(key=forms.INPAINT_GUIDANCE).value == 30.0
    assert any("FLUX.1 [dev] Non-Commercial License" in c.value for c in at.caption)


def test_a_reference_picture_goes_to_flux2_klein_and_is_recorded(modern):
    from core.operations.inpaint import reference_sha256

    at = inpaint_page()
    picture = Image.new("RGB", (48, 32), (230, 180, 20))
    at.session_state[session.INPAINT_REFERENCE] = ("lamp.png", picture)  # what the uploader stores
    at = quick(at.run())
    assert any(c.value == "Reference: lamp.png" for c in at.caption)
    at.text_area(key=forms.INPAINT_PROMPT).input("a brass lamp")
    button(at, "Generate").click()
    at.run()
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert result.engine == "flux2_klein"
    assert result.params.reference == "lamp.png" and result.params.reference_sha256 == reference_sha256(picture)
    assert unchanged_beyond_the_edge(result.images[0], result.params.mask_blur)


def test_qwen_image_edit_takes_an_instruction(modern):
    at = inpaint_page()
    at.selectbox(key=forms.INPAINT_ENGINE).set_value("qwen_image_edit").run()
    mode = at.button_group(key=forms.INPAINT_MODE)
    assert mode.value == "Describe what should be there"
    mode.set_value("Say what to change").run()
    at = quick(at)
    at.text_area(key=forms.INPAINT_PROMPT).input("make it red")
    button(at, "Generate").click()
    at.run()
    assert not at.exception and not at.error
    result = at.session_state[session.INPAINT_RESULT]
    assert result.engine == "qwen_image_edit" and result.params.mode == "instruct"
    assert result.params.prompt == "make it red" and result.params.guidance_scale == 4.0
    assert unchanged_beyond_the_edge(result.images[0], result.params.mask_blur)
