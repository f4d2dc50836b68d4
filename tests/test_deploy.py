"""Deploy targets, verified without Docker or a Space: the image's commands run in this venv, and
the files each target reads say what the app needs."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_image_runs_as_a_user_with_models_in_a_volume_and_a_health_check():
    text = dockerfile()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^VOLUME /models$", text, re.M) and "INPAINT_STUDIO_MODELS_DIR=/models" in text
    assert 'CMD ["python", "scripts/healthcheck.py"]' in text
    assert re.search(r'^CMD \["sh", "scripts/serve.sh"\]$', text, re.M)
    assert "COPY requirements.txt" in text and "pip install --no-cache-dir -r requirements.txt" in text
    for package in ("libgl1", "libglib2.0-0"):  # what OpenCV needs, in the image and on Community Cloud
        assert package in text
        assert package in (ROOT / "packages.txt").read_text().split()


@pytest.mark.timeout(180)
def test_the_images_command_serves_the_app_under_a_base_url_and_the_health_check_passes(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHON": sys.executable, "PORT": str(port), "ADDRESS": "127.0.0.1", "BASE_URL": "/studio",
           "INPAINT_STUDIO_MODELS_DIR": str(tmp_path / "models"), "INPAINT_STUDIO_OFFLINE": "1"}
    env = {key: value for key, value in env.items() if not key.startswith("INPAINT_STUDIO_MODEL_")}
    health = [sys.executable, str(ROOT / "scripts" / "healthcheck.py")]
    assert subprocess.run(health, env=env, timeout=30, check=False).returncode == 1  # nothing there yet
    server = subprocess.Popen(["sh", str(ROOT / "scripts" / "serve.sh")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(health, env=env, timeout=30, check=False).returncode != 0:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not become healthy"
            time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/studio/", timeout=10) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_the_readme_front_matter_makes_a_streamlit_space():
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    front = dict(line.split(": ", 1) for line in text.split("---\n")[1].strip().splitlines())
    assert front["sdk"] == "streamlit" and (ROOT / front["app_file"]).exists()
    pinned = re.search(r"^streamlit==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert front["sdk_version"] == pinned
