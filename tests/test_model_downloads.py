"""Downloads against a local hub (tests/local_hub.py): the command line's ``models download`` and the
Models page's button through ``huggingface_hub`` itself, a connection cut mid-file and resumed with a
Range request, cancel then resume, checksums (a URL file's MD5, a hub file's ETag), a gated
repository's 401, plain-URL files (LaMa, FastSAM), deleting, offline."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import downloads, model_files
from core.catalog import BUILTIN
from core.config import load_settings
from core.downloads import DownloadManager
from core.model_files import DownloadError, locate, partial_path
from tests.conftest import ROOT
from tests.helpers import TIMEOUT
from tests.local_hub import LocalHub

CLIP = "openai/clip-vit-base-patch32"
WEIGHTS = f"{CLIP}/model.safetensors"
ICLIGHT = "lllyasviel/ic-light"
SAM3 = "facebook/sam3"
GOOD_TOKEN = "hf_accepted_licence"
WAIT = 90  # seconds, the most any download here may take (a resumed one waits out its cut connection)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny CLIP and LaMa of tests/tiny_models.py (a hub repository and a plain file)."""
    from tests.tiny_models import build_clip, build_lama

    folder = tmp_path_factory.mktemp("tiny-downloads")
    return {"clip": build_clip(folder), "lama": build_lama(folder)}


@pytest.fixture
def hub(tiny, monkeypatch, tmp_path):
    """The local hub serving CLIP, IC-Light's file, a gated SAM 3 and LaMa / FastSAM as plain files;
    this process online, pointed at it, with an empty models folder and hub cache."""
    import huggingface_hub.constants as hub_constants

    lama = tiny["lama"].read_bytes()
    server = LocalHub(
        {CLIP: tiny["clip"],
         ICLIGHT: {"iclight_sd15_fc.safetensors": os.urandom(50_000), "README.md": b"IC-Light"},
         SAM3: {"config.json": b'{"model_type": "sam3"}', "model.safetensors": os.urandom(30_000)}},
        files={"big-lama.pt": lama, "FastSAM-s.pt": os.urandom(300_000)},
    ).start()
    server.gated[SAM3] = GOOD_TOKEN
    for key in list(os.environ):
        if key.startswith("INPAINT_STUDIO_MODEL_") or key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_OFFLINE", "0")
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    # huggingface_hub read these when it was imported (offline, as every test here starts): set them as a
    # fresh import in this environment would, and a small transfer chunk so that tiny files come in pieces.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_DOWNLOAD_TIMEOUT", WAIT)  # a held transfer is not retried meanwhile
    for module in (downloads, model_files):  # tiny files in several chunks
        monkeypatch.setattr(module, "CHUNK_BYTES", 4096)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.setitem(BUILTIN.models, "lama", dataclasses.replace(
        BUILTIN.models["lama"], url=server.file_url("big-lama.pt"), md5=hashlib.md5(lama).hexdigest()))
    monkeypatch.setattr(downloads, "ULTRALYTICS_ASSETS", f"{server.url}/files")
    yield server
    server.stop()


def fetch(role: str, token: str | None = None, manager: DownloadManager | None = None):
    manager = manager or DownloadManager(load_settings())
    manager.start(role, token=token)
    job = manager.wait(role, WAIT)
    assert job is not None and not job.running, f"{role} still downloading after {WAIT} s"
    return job


def same_files(folder: Path, source: Path) -> bool:
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) and all(
        (folder / name).read_bytes() == (source / name).read_bytes() for name in names)


# --- the command line, through huggingface_hub's snapshot_download ------------------------------------------


def test_models_download_fetches_a_repository_from_the_hub_and_prints_its_setting(hub, tiny, tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    out = tmp_path / "copy"
    hub.cdn_redirects = True  # the weights through a redirect to another host, as on the real hub
    result = subprocess.run([sys.executable, "-m", "core", "models", "download", "clip", "--dir", str(out)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    folder = out / "clip-vit-base-patch32"
    assert f"INPAINT_STUDIO_MODEL_CLIP={folder}" in result.stdout
    assert all((folder / p.relative_to(tiny["clip"])).read_bytes() == p.read_bytes()
               for p in tiny["clip"].rglob("*") if p.is_file())  # (beside huggingface_hub's .cache/ folder)
    assert any(path.startswith(f"/api/models/{CLIP}") for _, path, _ in hub.requests)
    assert any(method == "GET" and path == f"/cdn/{CLIP}/model.safetensors" for method, path, _ in hub.requests)


# --- the app's downloads: into the models folder, found by locate ------------------------------------------


def test_a_repository_lands_where_the_app_finds_it_and_loads(hub, tiny):
    from transformers import CLIPModel

    settings = load_settings()
    assert not locate("clip", settings).available
    job = fetch("clip")
    assert job.state == "done", job.message
    status = locate("clip", settings)
    assert status.path == settings.models_dir / CLIP and same_files(status.path, tiny["clip"])
    assert job.done == job.total == sum(p.stat().st_size for p in tiny["clip"].rglob("*") if p.is_file())
    assert CLIPModel.from_pretrained(status.path).config.projection_dim > 0
    assert not (settings.models_dir / downloads.STAGING / "clip").exists()


def test_a_pipeline_comes_with_its_subfolders_and_only_the_files_the_app_loads(hub, tmp_path):
    from diffusers import AutoPipelineForInpainting

    from tests.tiny_models import build_sd15_inpaint

    source = build_sd15_inpaint(tmp_path / "tiny")
    repo = BUILTIN.models["sd15_inpaint"].default
    files = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    hub.add_repo(repo, {**files, "unet/diffusion_pytorch_model.bin": b"a duplicate", "v1-5-inpainting.ckpt": b"x"})
    job = fetch("sd15_inpaint")
    assert job.state == "done", job.message
    folder = locate("sd15_inpaint", load_settings()).path
    assert folder == load_settings().models_dir / repo
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(files)
    assert AutoPipelineForInpainting.from_pretrained(folder).unet.config.in_channels == 9


def test_a_connection_cut_mid_file_is_resumed_with_a_range_request(hub, tiny):
    hub.cut_once[WEIGHTS] = 10_000  # the server drops the connection once, after 10 000 bytes
    job = fetch("clip")
    assert job.state == "done", job.message
    assert hub.ranges("model.safetensors") == ["bytes=8192-"]  # the two whole 4 KB chunks received are kept
    assert same_files(locate("clip", load_settings()).path, tiny["clip"])


def wait_for_bytes(job, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while job.done < count:
        assert job.running and time.monotonic() < deadline, f"{job.role}: {job.done} bytes, {count} expected"
        time.sleep(0.01)


def test_a_cancelled_download_is_not_a_model_and_resumes_from_its_bytes(hub, tiny):
    settings = load_settings()
    hub.hold_once[WEIGHTS] = 16_384  # the server sends 16 KB of the weights, then waits
    manager = DownloadManager(settings)
    job = manager.start("clip")
    wait_for_bytes(job, (tiny["clip"] / "config.json").stat().st_size + 16_384)  # files come in name order
    manager.cancel("clip")
    hub.release.set()
    job = manager.wait("clip", WAIT)
    assert job.state == "cancelled" and "continues" in job.message
    assert not locate("clip", settings).available  # a partial download is never taken for the model
    assert not (settings.models_dir / CLIP).exists()
    assert downloads.partial_size(BUILTIN.models["clip"], settings) > 16_384  # the finished files too
    part = next((settings.models_dir / downloads.STAGING / "clip").rglob("model.safetensors.part"))
    assert part.stat().st_size == 16_384  # the chunk that came after the cancel was not written
    job = fetch("clip", manager=manager)
    assert job.state == "done", job.message
    assert hub.ranges("model.safetensors") == ["bytes=16384-"]
    assert sum(method == "GET" and path.endswith("/config.json") for method, path, _ in hub.requests) == 1  # kept
    assert same_files(locate("clip", settings).path, tiny["clip"])
    assert downloads.partial_size(BUILTIN.models["clip"], settings) == 0


def test_a_hub_file_that_does_not_match_its_etag_is_refused_and_not_kept(hub):
    hub.corrupt.add(f"{ICLIGHT}/iclight_sd15_fc.safetensors")
    settings = load_settings()
    job = fetch("iclight")
    assert job.state == "failed" and "published checksum" in job.message
    assert not locate("iclight", settings).available
    assert downloads.partial_size(BUILTIN.models["iclight"], settings) == 0
    hub.corrupt.clear()
    job = fetch("iclight")
    assert job.state == "done" and locate("iclight", settings).path == settings.models_dir / "iclight_sd15_fc.safetensors"


def test_a_gated_repository_says_how_to_get_access(hub):
    settings = load_settings()
    job = fetch("sam3")  # no token anywhere: refused before asking the hub for a file
    assert job.state == "failed" and "no hub token was given" in job.message
    assert not [path for _, path, _ in hub.requests if "/resolve/" in path]
    job = fetch("sam3", token="hf_not_accepted")  # the hub answers 401 (GatedRepo)
    assert job.state == "failed"
    assert "Accept its licence at https://huggingface.co/facebook/sam3" in job.message
    assert "huggingface.co/settings/tokens" in job.message and "token field" in job.message
    assert any(path.startswith(f"/{SAM3}/resolve/") for _, path, _ in hub.requests)
    assert not locate("sam3", settings).available
    hub.cdn_redirects = True  # the weights come from "another host", as the real hub's CDN
    job = fetch("sam3", token=GOOD_TOKEN)
    assert job.state == "done", job.message
    assert locate("sam3", settings).available
    assert hub.authorization[f"/{SAM3}/resolve/{hub.commit(SAM3)}/config.json"] == f"Bearer {GOOD_TOKEN}"
    assert hub.authorization[f"/cdn/{SAM3}/model.safetensors"] is None  # the token stays with the hub
    assert (settings.models_dir / SAM3 / "model.safetensors").read_bytes() == hub.repos[SAM3]["model.safetensors"]


# --- plain files: LaMa, FastSAM ------------------------------------------------------------------------------


def test_a_published_file_resumes_after_a_cut_and_is_checked(hub, tiny):
    hub.cut_once["files/big-lama.pt"] = 10_000
    settings = load_settings()
    job = fetch("lama")
    assert job.state == "done", job.message
    assert hub.ranges("big-lama.pt") == ["bytes=10000-"]  # every byte received is kept
    assert locate("lama", settings).path.read_bytes() == tiny["lama"].read_bytes()
    assert not partial_path(settings.models_dir / "big-lama.pt").exists()


def test_a_published_file_with_the_wrong_checksum_is_refused(hub, monkeypatch):
    monkeypatch.setitem(BUILTIN.models, "lama", dataclasses.replace(BUILTIN.models["lama"], md5="0" * 32))
    settings = load_settings()
    job = fetch("lama")
    assert job.state == "failed" and "published checksum" in job.message and "0" * 32 in job.message
    assert not locate("lama", settings).available and not list(settings.models_dir.iterdir())


def test_fastsam_comes_from_the_assets_address(hub):
    job = fetch("fastsam")
    assert job.state == "done", job.message
    assert locate("fastsam", load_settings()).path.stat().st_size == 300_000


def test_a_published_file_cancelled_keeps_its_bytes_and_resumes(hub, tiny):
    settings = load_settings()
    hub.hold_once["files/big-lama.pt"] = 12_288
    manager = DownloadManager(settings)
    job = manager.start("lama")
    wait_for_bytes(job, 12_288)
    manager.cancel("lama")
    hub.release.set()
    job = manager.wait("lama", WAIT)
    assert job.state == "cancelled"
    part = partial_path(settings.models_dir / "big-lama.pt")
    assert part.stat().st_size == 12_288 and not locate("lama", settings).available
    assert fetch("lama", manager=manager).state == "done"
    assert hub.ranges("big-lama.pt") == ["bytes=12288-"]
    assert locate("lama", settings).path.read_bytes() == tiny["lama"].read_bytes()


# --- one download per model, deleting, offline --------------------------------------------------------------


def test_one_download_per_model_at_a_time(hub):
    hub.hold_once[WEIGHTS] = 4096  # the download stays running until released
    manager = DownloadManager(load_settings())
    first = manager.start("clip")
    assert manager.start("clip") is first and manager.running() == [first]  # a second session joins it
    hub.release.set()
    assert manager.wait("clip", WAIT).state == "done"
    assert sum(method == "GET" and path.endswith("/model.safetensors") for method, path, _ in hub.requests) == 1


def test_delete_removes_only_what_the_app_downloaded(hub, tiny, monkeypatch):
    settings = load_settings()
    ends = []
    manager = DownloadManager(settings, on_finish=ends.append)
    assert fetch("clip", manager=manager).state == "done" and ends == ["clip"]
    freed = manager.delete("clip")
    assert freed == sum(p.stat().st_size for p in tiny["clip"].rglob("*") if p.is_file())
    assert not locate("clip", settings).available and not (settings.models_dir / "openai").exists()
    assert ends == ["clip", "clip"]
    # a model set by hand to a folder of its own is never the app's to delete
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_CLIP", str(tiny["clip"]))
    settings = load_settings()
    assert downloads.removable(locate("clip", settings), settings) == []
    DownloadManager(settings).delete("clip")
    assert (tiny["clip"] / "config.json").exists()


def test_a_model_in_the_hub_cache_is_deleted_with_its_repository(hub, tmp_path):
    from huggingface_hub import snapshot_download

    snapshot_download(CLIP, endpoint=hub.url)  # as `models download` without --dir puts it
    settings = load_settings()
    status = locate("clip", settings)
    assert status.available and "models--openai--clip-vit-base-patch32" in str(status.path)
    assert downloads.removable(status, settings) == [tmp_path / "hf" / "hub" / "models--openai--clip-vit-base-patch32"]
    DownloadManager(settings).delete("clip")
    assert not locate("clip", settings).available


def test_a_download_that_cannot_fit_on_the_disk_is_refused_at_once(hub, monkeypatch):
    monkeypatch.setattr(downloads, "disk_free", lambda settings: 100_000_000)  # 100 MB; CLIP is about 600 MB
    with pytest.raises(DownloadError, match="only 95.4 MB is free") as refused:
        DownloadManager(load_settings()).start("clip")
    assert "INPAINT_STUDIO_MODELS_DIR" in str(refused.value) and hub.requests == []


def test_a_model_set_to_a_local_path_is_not_downloaded(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("INPAINT_STUDIO_MODEL_LAMA", str(tmp_path / "elsewhere" / "big-lama.pt"))
    job = fetch("lama")
    assert job.state == "failed" and "INPAINT_STUDIO_MODEL_LAMA" in job.message and hub.requests == []


def test_offline_nothing_is_tried(hub, monkeypatch):
    monkeypatch.setenv("INPAINT_STUDIO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline") as refused:
        DownloadManager(load_settings()).start("clip")
    assert "models download" in str(refused.value)
    monkeypatch.setenv("INPAINT_STUDIO_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        DownloadManager(load_settings()).start("clip")
    assert hub.requests == []


# --- the Models page -------------------------------------------------------------------------------------------


def models_page(role: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    if role:
        at.query_params["role"] = role
    return at, at.switch_page("pages/6_Models.py").run()


def run_until(at, done, what: str):
    deadline = time.monotonic() + WAIT
    while not done(at):
        assert time.monotonic() < deadline, (f"{what} did not happen within {WAIT} s: "
                                             f"{[(b.key, b.label) for b in at.button]}, "
                                             f"{[m.value for m in [*at.markdown, *at.caption, *at.error]][:12]}")
        time.sleep(0.1)
        at.run()
    return at


def test_the_page_downloads_a_model_and_every_page_sees_it(app_without_models, hub, tiny):
    app_without_models.setenv("INPAINT_STUDIO_MODELS_DIR", os.environ["INPAINT_STUDIO_MODELS_DIR"])
    home, _ = models_page()
    table = home.switch_page("streamlit_app.py").run().table[0].value
    assert dict(zip(table["Model"], table["Status"]))["CLIP ViT-B/32"] == "missing"  # cached for 30 s
    at = home.switch_page("pages/6_Models.py").run()
    assert not at.exception
    assert "free** on its disk" in at.caption[0].value
    at.button(key="download_clip").click().run()
    run_until(at, lambda at: not any(b.key == "cancel_clip" for b in at.button)
              and any("Here" in m.value for m in at.markdown), "the download")
    assert not at.exception and not at.error
    assert same_files(locate("clip", load_settings()).path, tiny["clip"])
    table = at.switch_page("streamlit_app.py").run().table[0].value
    assert dict(zip(table["Model"], table["Status"]))["CLIP ViT-B/32"] == "available"


def test_the_page_shows_progress_and_cancels(app_without_models, hub):
    app_without_models.setenv("INPAINT_STUDIO_MODELS_DIR", os.environ["INPAINT_STUDIO_MODELS_DIR"])
    hub.hold_once[WEIGHTS] = 16_384
    _, at = models_page("clip")
    assert "the model you came for" in at.markdown[0].value and "CLIP" in at.markdown[0].value
    at.button(key="download_clip").click().run()
    from ui import resources

    def held(at) -> bool:  # the server sent 16 KB of the weights and waits
        job = resources.downloads().job("clip")  # the server's one manager, as the page sees it
        return job is not None and job.done >= 16_384
    run_until(at, lambda at: held(at) and any(b.key == "cancel_clip" for b in at.button) and at.get("progress")
              and "Downloading:" in at.get("progress")[0].proto.text and " of " in at.get("progress")[0].proto.text,
              "a progress bar in bytes")
    at.button(key="cancel_clip").click().run()
    hub.release.set()
    run_until(at, lambda at: any(b.key == "download_clip" and b.label == "Resume" for b in at.button), "the cancel")
    assert any("kept from an unfinished download" in c.value for c in at.caption)
    assert not locate("clip", load_settings()).available


def test_the_page_passes_the_session_token_and_deletes_after_asking(app_without_models, hub):
    app_without_models.setenv("INPAINT_STUDIO_MODELS_DIR", os.environ["INPAINT_STUDIO_MODELS_DIR"])
    _, at = models_page("sam3")
    at.text_input(key="models_hub_token").input(GOOD_TOKEN)
    at.button(key="download_sam3").click().run()
    run_until(at, lambda at: locate("sam3", load_settings()).available
              and any(b.key == "delete_sam3" for b in at.button), "the gated download")
    at.button(key="delete_sam3").click().run()
    assert any("Delete" in w.value for w in at.warning)
    assert locate("sam3", load_settings()).available  # nothing is deleted before the confirmation
    at.button(key="delete_yes_sam3").click().run()
    assert any("Deleted SAM 3" in s.value for s in at.success)
    assert not locate("sam3", load_settings()).available


def test_offline_the_page_says_so_and_offers_no_download(app_without_models):
    _, at = models_page()
    assert not at.exception
    assert any("offline" in info.value and "models download" in info.value for info in at.info)
    assert all(b.disabled for b in at.button if b.key and b.key.startswith("download_"))


def test_the_relight_and_segment_pages_link_each_missing_model_to_the_models_page(app_without_models):
    from tests.helpers import make_photo, png_bytes, upload
    from tests.test_app_relight import relight_page

    at = relight_page()
    links = {link.proto.query_string for link in at.page_link if "on the Models page" in link.value}
    assert links == {"role=iclight_base"}  # the first model IC-Light lacks
    upload(at.switch_page("streamlit_app.py").run(), "photo.png", png_bytes(make_photo()))
    at = at.switch_page("pages/1_Segment.py").run()
    assert not at.exception
    assert "role=fastsam" in {link.proto.query_string for link in at.page_link if "Models page" in link.value}
