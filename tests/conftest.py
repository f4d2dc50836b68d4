"""Shared test set-up: repo root on sys.path, offline ML libraries, tiny models fixture."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# No test may reach the network, and the ML libraries must learn that before they are imported.
from core.config import OFFLINE_ENV  # noqa: E402 (needs the repo root on sys.path)

os.environ.update(OFFLINE_ENV)
os.environ["INPAINT_STUDIO_OFFLINE"] = "1"
os.environ["YOLO_VERBOSE"] = "0"
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "inpaint-studio-tests-yolo"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models in the real formats, built once per test session.

    Returns the role → path mapping also written to ``models.json``.
    """
    from tests.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny-models"))
