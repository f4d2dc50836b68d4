"""``python -m core models list|download``: what is on this machine, and fetching (offline here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import cli, model_files
from core.catalog import BUILTIN
from core.config import load_settings
from tests.helpers import SD15, TIMEOUT

ROLES = BUILTIN.models

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_models(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("INPAINT_STUDIO_MODEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("INPAINT_STUDIO_MODELS_DIR", str(tmp_path / "models"))
    return monkeypatch


def test_list_shows_every_role_present_or_missing_with_size_and_fallback(no_models, tiny_models, capsys):
    no_models.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
    no_models.setenv("INPAINT_STUDIO_MODEL_ICLIGHT", str(tiny_models["iclight"]))
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip() and not line.startswith("Fetch")}
    assert set(ROLES) <= set(lines)
    assert "present" in lines["sd15_inpaint"] and any(unit in lines["sd15_inpaint"] for unit in ("KB", "MB"))
    assert "present" in lines["iclight"]
    assert "missing" in lines["clip"] and "text selection is disabled" in lines["clip"]
    assert "python -m core models download" in out and "sd15_inpaint" not in out.split("download")[-1]
    sizes = {m.role.name: m.size for m in model_files.local_models(load_settings())}
    assert sizes["sd15_inpaint"] == sum(f.stat().st_size for f in tiny_models["sd15_inpaint"].rglob("*") if f.is_file())
    assert sizes["clip"] == 0


def test_download_fails_fast_and_clearly_when_offline(no_models):
    env = {**os.environ, "INPAINT_STUDIO_OFFLINE": "1"}
    # The timeout bounds it: no retries against an unreachable hub.
    result = subprocess.run([sys.executable, "-m", "core", "models", "download", "clip"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "INPAINT_STUDIO_OFFLINE is on" in result.stderr and "--dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_hub_is_refused_before_any_download(no_models, monkeypatch, capsys):
    no_models.setenv("INPAINT_STUDIO_OFFLINE", "auto")
    monkeypatch.setattr(model_files, "hub_reachable", lambda: False)
    monkeypatch.setattr(model_files, "download", lambda *a, **k: pytest.fail("must not try to download"))
    assert cli.main(["models", "download"]) == 2
    assert "huggingface.co does not resolve" in capsys.readouterr().err


def test_unknown_roles_are_named(no_models, capsys):
    assert cli.main(["models", "download", "clip", "dalle"]) == 2
    assert "dalle" in capsys.readouterr().err


def test_only_the_files_the_app_loads_are_fetched():
    pipeline = model_files.patterns(ROLES["sd15_inpaint"])
    assert "*/*.fp16.safetensors" in pipeline and "model_index.json" in pipeline
    assert not any(p.endswith((".bin", ".ckpt")) or p == "*" for p in pipeline)
    assert model_files.patterns(ROLES["clip"]) == ["*.json", "*.txt", "model.safetensors"]
    assert model_files.patterns(ROLES["lcm_lora_sd15"]) == ["pytorch_lora_weights.safetensors"]
    assert model_files.patterns(ROLES["iclight"]) is None  # one file of a repository


def test_download_puts_each_model_in_dir_and_prints_the_settings(no_models, monkeypatch, tmp_path, capsys):
    import huggingface_hub

    calls = []

    def snapshot(repo, allow_patterns=None, local_dir=None):
        calls.append(("snapshot", repo, tuple(allow_patterns), local_dir))
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        return local_dir

    def one_file(repo, filename, local_dir=None):
        calls.append(("file", repo, filename, local_dir))
        return str(Path(local_dir) / filename)

    no_models.setenv("INPAINT_STUDIO_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: ["unet/diffusion_pytorch_model.fp16.safetensors"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", one_file)
    target = tmp_path / "dl"
    assert cli.main(["models", "download", "sd15_inpaint", "iclight", "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert calls[0] == ("snapshot", ROLES["sd15_inpaint"].default, tuple(model_files.PIPELINE_FILES),
                        str(target / "stable-diffusion-inpainting"))
    assert calls[1] == ("file", "lllyasviel/ic-light", "iclight_sd15_fc.safetensors", str(target))
    assert f"INPAINT_STUDIO_MODEL_SD15_INPAINT={target / 'stable-diffusion-inpainting'}" in out
    assert f"INPAINT_STUDIO_MODEL_ICLIGHT={target / 'iclight_sd15_fc.safetensors'}" in out


def test_a_failed_download_is_reported_and_the_others_go_on(no_models, monkeypatch, capsys):
    no_models.setenv("INPAINT_STUDIO_OFFLINE", "0")

    def download(role, settings, folder, log, catalog=None):
        if role == "clip":
            raise OSError("disk full")
        return Path("/models") / role

    monkeypatch.setattr(model_files, "download", download)
    assert cli.main(["models", "download", "clip", "sam"]) == 1
    captured = capsys.readouterr()
    assert "clip: OSError: disk full" in captured.err and "INPAINT_STUDIO_MODEL_SAM=/models/sam" in captured.out


def test_a_pipeline_saved_as_the_fp16_variant_loads(tiny_models, tmp_path):
    from diffusers import AutoPipelineForInpainting

    from core.engines.diffusion import DiffusionEngine, weights_variant

    folder = tmp_path / "fp16-only"
    AutoPipelineForInpainting.from_pretrained(tiny_models["sd15_inpaint"]).save_pretrained(folder, variant="fp16")
    assert not (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert weights_variant(str(folder)) == "fp16" and weights_variant(str(tiny_models["sd15_inpaint"])) is None
    engine = DiffusionEngine.load(SD15, folder)
    assert engine.pipe.unet.config.in_channels == 9


def test_the_home_page_gives_each_missing_model_its_download_command(app_without_models):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
    table = at.table[0].value
    commands = dict(zip(table["Model"], table["To get it"]))
    assert commands["CLIP ViT-B/32"] == "python -m core models download clip"
    assert commands["IC-Light fc"] == "python -m core models download iclight"
    assert any("Installing models" in caption.value for caption in at.caption)


def test_a_background_fetch_takes_only_what_is_missing_and_reports_each_role(no_models, tiny_models):
    from core.model_files import BackgroundFetch

    no_models.setenv("INPAINT_STUDIO_MODEL_SD15_INPAINT", str(tiny_models["sd15_inpaint"]))
    fetched = []

    def fetch(role, settings, folder, log):
        fetched.append(role)
        if role == "sam":
            raise OSError("connection reset")
        return Path("/models") / role

    job = BackgroundFetch(("sd15_inpaint", "clip", "sam"), load_settings(), fetch).start()
    job.thread.join(30)
    assert not job.running and fetched == ["clip", "sam"]
    assert job.state == {"sd15_inpaint": "present", "clip": "done", "sam": "failed: OSError: connection reset"}


def test_the_home_page_shows_the_background_fetch(app_without_models, monkeypatch):
    import threading

    from streamlit.testing.v1 import AppTest

    release = threading.Event()
    monkeypatch.setattr(model_files, "download", lambda *args, **kwargs: release.wait(30) and Path("/x"))
    app_without_models.setenv("INPAINT_STUDIO_DOWNLOAD_ON_START", "clip,sam")
    app_without_models.setenv("INPAINT_STUDIO_OFFLINE", "0")
    try:
        at = AppTest.from_file("../streamlit_app.py", default_timeout=TIMEOUT).run()
        assert not at.exception
        assert any("Fetching models in the background (clip, sam)" in info.value for info in at.info)
    finally:
        release.set()


def test_a_pipeline_repository_without_fp16_weights_gets_its_plain_ones():
    fp16 = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors", "v1-5-pruned.ckpt"]
    assert model_files.pipeline_patterns(fp16) == model_files.PIPELINE_FILES
    plain = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.bin"]
    assert fetched(plain) == plain[:4]
    assert fetched(["unet/diffusion_pytorch_model.bin"]) == ["unet/diffusion_pytorch_model.bin"]


def fetched(files: list[str]) -> list[str]:
    """The files of a repository holding ``files`` that ``models download`` takes (the hub's own filter)."""
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(files, allow_patterns=model_files.pipeline_patterns(files)))


def test_a_flux_repository_gets_its_shards_and_its_t5_tokenizer_but_not_the_single_file_checkpoint():
    layout = ["model_index.json", "flux1-fill-dev.safetensors", "ae.safetensors",
              "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
              "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
              "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
              "text_encoder_2/model.safetensors.index.json", "text_encoder_2/model-00001-of-00002.safetensors",
              "tokenizer_2/spiece.model", "tokenizer_2/tokenizer.json", "tokenizer/vocab.json",
              "tokenizer/merges.txt", "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"]
    assert fetched(layout) == [name for name in layout if "/" in name or name == "model_index.json"]


# --- files published outside the hub (LaMa, MI-GAN): HTTPS with the MD5 checked ------------------------


def _published(tmp_path, content: bytes, md5: str | None = None):
    """A catalog entry like LaMa's whose address is a local file (``urllib`` fetches file:// as https://)."""
    import dataclasses
    import hashlib

    source = tmp_path / "published" / "big-lama.pt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    return dataclasses.replace(ROLES["lama"], url=source.as_uri(),
                               md5=md5 or hashlib.md5(content).hexdigest())


def test_a_published_file_is_fetched_into_the_models_folder_and_found_there(no_models, tmp_path):
    from core.model_files import download_url, locate

    role = _published(tmp_path, b"torchscript bytes")
    models = tmp_path / "models"
    logged = []
    path = download_url(role, models, logged.append)
    assert path == models / "big-lama.pt" and path.read_bytes() == b"torchscript bytes"
    assert locate("lama", load_settings()).path == path  # the app finds it with no setting
    assert download_url(role, models, logged.append) == path and "checksum verified" in logged[-1]


def test_a_download_whose_checksum_differs_is_refused_and_nothing_is_kept(no_models, tmp_path):
    from core.model_files import DownloadError, download_url

    role = _published(tmp_path, b"a changed file", md5="e3aa4aaa15225a33ec84f9f4bc47e500")
    with pytest.raises(DownloadError, match="checksum") as refused:
        download_url(role, tmp_path / "models", lambda text: None)
    assert "e3aa4aaa15225a33ec84f9f4bc47e500" in str(refused.value) and role.setting in str(refused.value)
    assert list((tmp_path / "models").iterdir()) == []  # neither the file nor a partial one


def test_an_unreachable_address_says_what_to_do(no_models, tmp_path):
    import dataclasses

    from core.model_files import DownloadError, download_url

    role = dataclasses.replace(ROLES["migan"], url=(tmp_path / "nowhere.pt").as_uri())
    with pytest.raises(DownloadError, match="could not be fetched") as failed:
        download_url(role, tmp_path / "models", lambda text: None)
    assert "INPAINT_STUDIO_MODEL_MIGAN" in str(failed.value)


def test_models_download_lama_goes_through_the_checksummed_fetch(no_models, monkeypatch, capsys, tmp_path):
    no_models.setenv("INPAINT_STUDIO_OFFLINE", "0")
    fetched = []
    monkeypatch.setattr(model_files, "download_url",
                        lambda role, folder, log: fetched.append((role.name, role.url, role.md5)) or folder / role.default)
    assert cli.main(["models", "download", "lama", "migan", "--dir", str(tmp_path / "out")]) == 0
    assert [name for name, _, _ in fetched] == ["lama", "migan"]
    assert all(url.startswith("https://") and len(md5) == 32 for _, url, md5 in fetched)
    assert f"INPAINT_STUDIO_MODEL_LAMA={tmp_path / 'out' / 'big-lama.pt'}" in capsys.readouterr().out


def test_a_gated_model_without_a_token_says_how_to_get_access(no_models, monkeypatch):
    import huggingface_hub

    from core.model_files import DownloadError, download

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *args, **kwargs: pytest.fail("nothing is asked of the hub without a token"))
    with pytest.raises(DownloadError, match="gated") as refused:
        download("sam3", load_settings())
    assert "HF_TOKEN" in str(refused.value) and "huggingface.co/facebook/sam3" in str(refused.value)


def test_a_gated_model_refused_by_the_hub_says_the_licence_must_be_accepted(no_models, monkeypatch):
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from core.model_files import DownloadError, download

    def refuse(*args, **kwargs):
        response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co/facebook/sam3"))
        raise GatedRepoError("403 Client Error: access to model facebook/sam3 is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(DownloadError, match="refused the token") as refused:
        download("sam3", load_settings())
    assert "Accept its licence" in str(refused.value)


def test_a_gated_model_asked_for_offline_gets_the_token_hint_too(no_models, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    no_models.setenv("INPAINT_STUDIO_OFFLINE", "1")
    assert cli.main(["models", "download", "flux_fill"]) == 2
    err = capsys.readouterr().err
    assert "nothing is downloaded" in err and "FLUX.1 Fill [dev] (black-forest-labs/FLUX.1-Fill-dev) is gated" in err
    assert "HF_TOKEN" in err


def test_models_list_shows_the_non_commercial_licence_of_flux_fill(no_models, capsys):
    assert cli.main(["models", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("flux_fill "))
    assert "FLUX.1 [dev] Non-Commercial License" in line and "missing" in line
