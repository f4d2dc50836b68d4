"""The command line: ``python -m core <command>``.

Commands build the same params objects and call the same core functions as the app. Problems with
the input (a file, a mask, an argument) exit with code 2, a failed generation with 1; either way
with one clear line on stderr and no traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import SettingsError, apply_offline_mode, load_settings, quiet_library_progress
from core.images import ImageError, read_image
from core.masks import MaskError, mask_from_image

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class BadInput(Exception):
    """An argument or input file that cannot be used (exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Inpaint Studio from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("inpaint", help="regenerate the masked region of a photo")
    edit.add_argument("image", type=Path, help="the photo")
    edit.add_argument("--mask", type=Path, required=True, help="mask image: white = regenerate (or transparency)")
    edit.add_argument("--out", type=Path, required=True,
                      help="output file (.png, .jpg, .webp); variants get -2, -3, … before the extension")
    edit.add_argument("--prompt", default="", help="what should be in the region")
    edit.add_argument("--negative", default="", help="what should not")
    edit.add_argument("--engine", default="sd15", help="sd15, sdxl, telea or navier_stokes (default sd15)")
    edit.add_argument("--steps", type=int, default=30)
    edit.add_argument("--guidance", type=float, default=7.5)
    edit.add_argument("--strength", type=float, default=1.0)
    edit.add_argument("--seed", type=int, default=None, help="first variant's seed (default: random)")
    edit.add_argument("--variants", type=int, default=1)
    edit.add_argument("--scheduler", default=None)
    edit.add_argument("--padding", type=int, default=32, help="context around the mask, px")
    edit.add_argument("--mask-blur", type=int, default=8, help="soft edge outside the mask, px")
    edit.add_argument("--blend", choices=("feather", "poisson"), default="feather")
    edit.add_argument("--no-color-match", action="store_true", help="do not match colours to the surroundings")
    edit.add_argument("--invert-mask", action="store_true", help="regenerate everything except the mask")
    edit.add_argument("--resize-mask", action="store_true", help="resize a mask of another size to the photo")

    batch = commands.add_parser("batch", help="apply a recipe to every photo of a folder or zip")
    batch.add_argument("--recipe", type=Path, required=True, help="recipe JSON (saved from the Inpaint or Relight page)")
    batch.add_argument("--input", type=Path, required=True, help="folder (searched recursively) or .zip of photos")
    batch.add_argument("--output", type=Path, required=True, help="folder for the results and manifest.json / .csv")
    batch.add_argument("--masks", type=Path, default=None,
                       help="folder or .zip of masks named like the photos (photo.png for photo.jpg)")
    batch.add_argument("--resume", action="store_true", help="skip photos an earlier run in --output finished")
    batch.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process; ray: a Ray cluster (pip install -r requirements-distributed.txt)")
    batch.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    batch.add_argument("--workers", type=int, default=1, help="Ray: model copies (actors) running at once")
    batch.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per model copy")
    batch.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per model copy")

    models = commands.add_parser("models", help="the models on this machine, and fetching them")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    models_commands.add_parser("list", help="every model role: configured id or path, present or not, size, fallback")
    fetch = models_commands.add_parser("download", help="fetch models (run on a machine with internet)")
    fetch.add_argument("roles", nargs="*", metavar="ROLE",
                       help="roles to fetch (default: the app's main models; `models list` names them all)")
    fetch.add_argument("--dir", type=Path, default=None,
                       help="put the models here (to copy to another machine) instead of the Hugging Face cache")
    return parser


def _progress(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] step {done}/{total}", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def inpaint_command(args: argparse.Namespace) -> int:
    from core.device import detect_device
    from core.engines import ModelLoadError
    from core.engines.base import InpaintError
    from core.images import encode_image
    from core.inpaint import InpaintParams, inpaint
    from core.models import load_inpaint_engine

    output_format = OUTPUT_FORMATS.get(args.out.suffix.lower())
    if output_format is None:
        raise BadInput(f"{args.out}: the output must end in .png, .jpg or .webp.")
    try:
        photo = read_image(args.image, name=str(args.image))
        mask_file = read_image(args.mask, name=str(args.mask))
        mask = mask_from_image(mask_file.rgb, photo.size, alpha=mask_file.alpha, resize=args.resize_mask,
                               name=str(args.mask))
        params = InpaintParams(
            prompt=args.prompt, negative_prompt=args.negative, guidance_scale=args.guidance, steps=args.steps,
            strength=args.strength, seed=args.seed, variants=args.variants, scheduler=args.scheduler,
            padding=args.padding, mask_blur=args.mask_blur, blend=args.blend, color_match=not args.no_color_match,
            invert_mask=args.invert_mask, engine=args.engine,
        )
    except (ImageError, MaskError, InpaintError) as error:
        raise BadInput(str(error)) from error
    settings = load_settings()
    apply_offline_mode(settings)
    quiet_library_progress()
    try:
        engine = load_inpaint_engine(args.engine, settings, detect_device(settings.device))
    except KeyError as error:
        raise BadInput(f"Unknown engine {args.engine!r}: use sd15, sdxl, telea or navier_stokes.") from error
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    try:
        result = inpaint(photo.rgb, mask, params, engine, progress=_progress)
    except InpaintError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(result.images):
        path = args.out if index == 0 else args.out.with_name(f"{args.out.stem}-{index + 1}{args.out.suffix}")
        path.write_bytes(encode_image(image, format=output_format, alpha=photo.alpha, icc_profile=photo.icc_profile,
                                      exif=photo.exif, params=result.metadata(index)))
        print(f"{path}  seed {result.seeds[index]}  seam ΔE {result.seam_delta_e[index]:.2f}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def batch_command(args: argparse.Namespace) -> int:
    from core.batch import BatchProgress, run
    from core.batch_inputs import BatchInputError
    from core.recipe import Recipe, RecipeError

    try:
        recipe = Recipe.load(args.recipe)
    except RecipeError as error:
        raise BadInput(str(error)) from error
    if args.engine == "local" and (args.ray_address or args.workers != 1 or args.gpus_per_worker):
        raise BadInput("--ray-address, --workers and --gpus-per-worker need --engine ray.")
    if args.workers < 1 or args.gpus_per_worker < 0 or args.cpus_per_worker <= 0:
        raise BadInput("--workers must be at least 1, --gpus-per-worker 0 or more, --cpus-per-worker above 0.")

    def report(progress: BatchProgress) -> None:
        row = progress.row
        mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped", "cancelled": "cancelled"}[row["status"]]
        detail = ", ".join(row["outputs"]) if row["status"] == "done" else row["error"]
        print(f"[{progress.finished}/{progress.total}] {row['name']}: {mark}  {detail}", file=sys.stderr, flush=True)

    try:
        if args.engine == "ray":
            from core.batch_ray import run_ray

            summary = run_ray(recipe, args.input, args.output, masks=args.masks, resume=args.resume,
                              address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                              cpus_per_worker=args.cpus_per_worker, on_progress=report)
        else:
            summary = run(recipe, args.input, args.output, masks=args.masks, resume=args.resume, on_progress=report)
    except BatchInputError as error:
        raise BadInput(str(error)) from error
    except ImportError as error:
        raise BadInput(f"--engine ray needs Ray: pip install -r requirements-distributed.txt ({error}).") from error
    print(summary.describe())
    return EXIT_OK if summary.ok else EXIT_FAILED


def models_command(args: argparse.Namespace) -> int:
    from core.model_files import (
        DEFAULT_ROLES,
        DownloadError,
        check_online,
        download,
        human_size,
        local_models,
        setting_line,
    )
    from core.models import ROLES

    settings = load_settings()
    if args.models_command == "list":
        rows = [(m.role.name, m.status.configured, "present" if m.status.available else "missing",
                 human_size(m.size) if m.status.available else "", "" if m.status.available else m.role.fallback)
                for m in local_models(settings)]
        header = ("role", "configured", "here", "size", "fallback in use")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            print("  ".join(str(value).ljust(width) for value, width in zip(row, widths)) + "  " + row[4])
        missing = [m.role.name for m in local_models(settings) if not m.status.available]
        if missing:
            print(f"\nFetch them on a machine with internet: python -m core models download {' '.join(missing)}")
        return EXIT_OK
    unknown = [role for role in args.roles if role not in ROLES]
    if unknown:
        raise BadInput(f"Unknown model role(s) {', '.join(unknown)}: use {', '.join(ROLES)}.")
    try:
        check_online(settings)
    except DownloadError as error:
        raise BadInput(str(error)) from error
    lines, failed = [], []
    for role in args.roles or DEFAULT_ROLES:
        try:
            path = download(role, settings, args.dir, log=lambda text: print(text, file=sys.stderr, flush=True))
        except Exception as error:  # noqa: BLE001 (the hub, the network and the disk raise many types)
            print(f"error: {role}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                  file=sys.stderr)
            failed.append(role)
            continue
        lines.append(setting_line(role, path))
    if lines:
        print("# Point the app at the models (environment or .streamlit/secrets.toml):")
        print("\n".join(lines))
    return EXIT_FAILED if failed else EXIT_OK


COMMANDS = {"inpaint": inpaint_command, "batch": batch_command, "models": models_command}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (BadInput, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return EXIT_FAILED
