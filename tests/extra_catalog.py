"""A catalog extension as a user would write one: one model role and one engine that runs it.

Loaded with ``INPAINT_STUDIO_CATALOG_MODULES=tests.extra_catalog``; nothing else in the app names it.
The "model" is a JSON file holding a colour, and the engine fills the region with that colour.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from core.catalog import EngineEntry, ModelEntry
from core.engines.base import CatalogEngine, EngineOutput, ModelLoadError

MODELS = [
    ModelEntry("flat_colour", "Flat colour", "fill the region with one colour", "flat-colour.json", "file",
               "flat-colour.json", "OpenCV removal", "file", licence="CC0-1.0"),
]
ENGINES = [
    EngineEntry("flat", "Flat colour fill", "removal", "tests.extra_catalog:FlatColourFill", ("flat_colour",),
                native_size=256, licence="CC0-1.0", speed="instant"),
]


class FlatColourFill(CatalogEngine):
    """Fills every crop with the colour its model file names ({"colour": [r, g, b]})."""

    def __init__(self, entry: EngineEntry, colour: tuple[int, int, int], model_id: str) -> None:
        self.entry, self.colour, self.model_id = entry, colour, model_id

    @classmethod
    def from_catalog(cls, request) -> FlatColourFill:
        path = Path(request.path())
        try:
            colour = tuple(int(c) for c in json.loads(path.read_text())["colour"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(f"{path} is not a flat colour file ({error}).") from error
        return cls(request.entry, colour, str(path))

    def generate(self, request, progress=None, should_cancel=None) -> EngineOutput:
        if progress is not None:
            progress(1, 1)
        return EngineOutput([Image.new("RGB", request.image.size, self.colour) for _ in request.seeds])
