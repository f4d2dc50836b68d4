"""The command line: ``inpaint-studio <command>`` (the project installed), or ``python -m core <command>``.

Commands build the same params objects and call the same operations as the app; the inpaint
command's options are InpaintParams' fields, with their defaults and help, and its engines the
catalog's. Problems with the input (a file, a mask, an argument, a recipe) exit with code 2, a
missing model or a failed generation with 1; either way with one clear line on stderr and no
traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from core import catalog as catalogs
from core import model_files, operations
from core.batch import BatchProgress, run
from core.batch_ray import run_ray
from core.canvas import fit_alpha
from core.config import apply_offline_mode, load_settings, quiet_library_progress
from core.errors import ModelUnavailable, StudioError, UserError
from core.images import read_image
from core.manager import ModelManager
from core.masks import mask_from_image
from core.operations.inpaint import InpaintParams, load_reference
from core.operations.outpaint import OutpaintParams
from core.output_formats import AUTO_FORMAT, CHOICES, FORMATS, check_format, check_quality, encode_result, for_extension
from core.recipe import Recipe

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
FORMAT_HELP = ("png: lossless; jpeg-keep: for a JPEG photo, only the blocks the edit changed are re-encoded (the "
               "file keeps its size, quality, EXIF and colour profile); jpeg: every block re-encoded at --quality "
               "(every pixel changes slightly); webp: WebP lossless")


AUTO_ENGINE = "auto"


class BadInput(UserError):
    """An argument or input file that cannot be used (exit code 2)."""


def _add_params_options(command: argparse.ArgumentParser, params: type, engines: list[str], titles: str) -> None:
    """One option per field of ``params``, with its default and help (``--<name>``, or its ``flag``)."""
    for field in dataclasses.fields(params):
        info = field.metadata
        if not info.get("option", True):
            continue
        flag = info.get("flag") or "--" + field.name.replace("_", "-")
        help_text = info.get("help", "")
        if field.name == "engine":
            command.add_argument(flag, dest=field.name, default=AUTO_ENGINE, metavar="ENGINE",
                                 help=f"{help_text}, one of {', '.join(engines)} ({titles}; default {AUTO_ENGINE}: "
                                      "the best diffusion engine this machine has and fits)")
        elif field.type in (bool, "bool"):
            command.add_argument(flag, dest=field.name, action="store_false" if field.default else "store_true",
                                 help=f"do not {help_text}" if field.default else help_text)
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(str(field.type), str)
            choices = info.get("choices") or None
            default_text = "" if field.default in (None, "") else f" (default {field.default})"
            command.add_argument(flag, dest=field.name, type=kind, default=field.default, choices=choices,
                                 help=help_text + default_text)


def _add_output_options(command: argparse.ArgumentParser) -> None:
    """--out, --format and --quality: where and how the inpaint and outpaint commands write."""
    command.add_argument("--out", type=Path, required=True,
                         help="output file (.png, .jpg, .webp); variants get -2, -3, … before the extension")
    command.add_argument("--format", default=AUTO_FORMAT, metavar="FORMAT",
                         help=f"one of {', '.join(CHOICES)} (default {AUTO_FORMAT}: what --out's extension says, a .jpg "
                              f"of a JPEG photo as jpeg-keep). {FORMAT_HELP}")
    command.add_argument("--quality", type=int, default=None,
                         help="JPEG quality 1-100 of --format jpeg and of jpeg-keep's fallback (default 95, or "
                              "INPAINT_STUDIO_JPEG_QUALITY)")


PROG = "python -m core"  # the name in usage lines; the installed command passes SCRIPT
SCRIPT = "inpaint-studio"  # [project.scripts] in pyproject.toml, which runs run()


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    catalog = catalogs.current()
    inpaint_engines = catalog.engine_names(operations.OPERATIONS["inpaint"].engine_kinds)
    titles = "; ".join(f"{name} = {catalog.title(name)}" for name in inpaint_engines if "+" not in name)
    parser = argparse.ArgumentParser(prog=prog, description="Inpaint Studio from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    edit = commands.add_parser("inpaint", help="regenerate the masked region of a photo")
    edit.add_argument("image", type=Path, help="the photo")
    edit.add_argument("--mask", type=Path, required=True, help="mask image: white = regenerate (or transparency)")
    _add_output_options(edit)
    _add_params_options(edit, InpaintParams, inpaint_engines, titles)
    edit.add_argument("--resize-mask", action="store_true", help="resize a mask of another size to the photo")

    extend = commands.add_parser("outpaint", help="extend the canvas and generate the new border")
    extend.add_argument("image", type=Path, help="the photo")
    _add_output_options(extend)
    _add_params_options(extend, OutpaintParams, inpaint_engines, titles)

    batch = commands.add_parser("batch", help="apply a recipe to every photo of a folder or zip")
    batch.add_argument("--recipe", type=Path, required=True, help="recipe JSON (saved from the Inpaint or Relight page)")
    batch.add_argument("--input", type=Path, required=True, help="folder (searched recursively) or .zip of photos")
    batch.add_argument("--output", type=Path, required=True, help="folder for the results and manifest.json / .csv")
    batch.add_argument("--masks", type=Path, default=None,
                       help="folder or .zip of masks named like the photos (photo.png for photo.jpg)")
    batch.add_argument("--resume", action="store_true", help="skip photos an earlier run in --output finished")
    batch.add_argument("--format", default=None, metavar="FORMAT",
                       help=f"one of {', '.join(CHOICES)} (default {AUTO_FORMAT}, or INPAINT_STUDIO_OUTPUT_FORMAT: "
                            f"jpeg-keep for JPEG photos, png for others). {FORMAT_HELP}")
    batch.add_argument("--quality", type=int, default=None,
                       help="JPEG quality 1-100 of --format jpeg (default 95, or INPAINT_STUDIO_JPEG_QUALITY)")
    batch.add_argument("--reference", type=Path, default=None,
                       help="reference image for the recipe's engine (default: the one the recipe names, looked "
                            "for as given, then next to the recipe)")
    batch.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process; ray: a Ray cluster (pip install -r requirements-distributed.txt)")
    batch.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    batch.add_argument("--workers", type=int, default=1, help="Ray: model copies (actors) running at once")
    batch.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs per model copy")
    batch.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray: CPUs per model copy")

    serve = commands.add_parser(
        "serve", help="serve the generating engines on Ray Serve, for app servers given INPAINT_STUDIO_ENGINE_SERVER",
        description="Deploy every diffusion, removal and relighting engine whose model is here as a Ray Serve "
                    "deployment (one per engine, its replicas each loading the model once), until Ctrl-C. Options "
                    "override the INPAINT_STUDIO_SERVE_* settings.")
    serve.add_argument("--engines", default=None, metavar="NAMES",
                       help="comma-separated engines to serve (default: every one whose model is here)")
    serve.add_argument("--host", default="127.0.0.1", help="where the HTTP server listens (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="its port (default 8000)")
    serve.add_argument("--ray-address", default=None,
                       help="an existing Ray cluster (default: start a local one on this machine)")
    serve.add_argument("--num-cpus", type=float, default=None, help="CPUs of the local Ray instance (default: all)")
    serve.add_argument("--gpus-per-replica", type=float, default=None,
                       help="GPUs per replica (default INPAINT_STUDIO_SERVE_GPUS, else 1 where the cluster has GPUs)")
    serve.add_argument("--cpus-per-replica", type=float, default=None, help="CPUs per replica (default 1)")
    serve.add_argument("--min-replicas", type=int, default=None, help="replicas per engine always running (default 1)")
    serve.add_argument("--max-replicas", type=int, default=None,
                       help="replicas per engine under load (autoscaling; default: --min-replicas)")
    serve.add_argument("--max-ongoing-requests", type=int, default=None,
                       help="requests one replica takes at once, the waiting ones included (default "
                            "INPAINT_STUDIO_QUEUE_MAX + 1)")

    models = commands.add_parser("models", help="the models on this machine, and fetching them")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    models_commands.add_parser("list", help="every model role: configured id or path, present or not, size, fallback")
    fetch = models_commands.add_parser("download", help="fetch models (run on a machine with internet)")
    fetch.add_argument("roles", nargs="*", metavar="ROLE",
                       help=f"roles to fetch (default: {', '.join(catalog.main_models())}; "
                            f"all: {', '.join(catalog.models)})")
    fetch.add_argument("--dir", type=Path, default=None,
                       help="put the models here (to copy to another machine) instead of the Hugging Face cache")
    return parser


def _progress(done: int, total: int) -> None:
    width = 30
    filled = int(width * done / total)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] step {done}/{total}", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def best_diffusion_engine(manager: ModelManager) -> str:
    """The first diffusion engine of the catalog whose model is here and fits (what the Inpaint page
    starts on); ModelUnavailable saying what to do when there is none."""
    offered = [name for name in manager.engines("diffusion") if "+" not in name]
    if not offered:
        notes = " ".join(manager.memory_notes("diffusion"))
        removers = manager.engines("removal")
        raise ModelUnavailable(
            "No diffusion model is on this machine (or none fits its memory), so nothing can be generated from a "
            f"prompt. {notes + ' ' if notes else ''}Fetch one (python -m core models download flux2_klein) and set "
            f"its setting, or remove the region without a prompt: --engine {removers[0] if removers else 'telea'}.")
    return offered[0]


def output_format_for(requested: str, out: Path, photo_format: str, image: Path) -> str:
    """The format ``inpaint`` writes ``out`` in: ``--format``, checked against the photo and ``out``'s
    extension; ``auto`` follows the extension (a .jpg of a JPEG photo keeps its unchanged blocks)."""
    requested = check_format(requested, "--format")
    from_extension = for_extension(out.suffix)
    if from_extension is None:
        raise BadInput(f"--out {out}: the output must end in .png, .jpg or .webp (.jpeg works too).")
    if requested == AUTO_FORMAT:
        return "jpeg-keep" if from_extension == "jpeg" and photo_format == "JPEG" else from_extension
    chosen = FORMATS[requested]
    if chosen.needs_jpeg and photo_format != "JPEG":
        raise BadInput(f"--format {requested} keeps a JPEG's unchanged blocks, but {image} is a {photo_format} file: "
                       "use --format png, jpeg or webp.")
    if chosen.extension != FORMATS[from_extension].extension:
        raise BadInput(f"--format {requested} writes {chosen.extension} files, but --out {out} ends in {out.suffix}: "
                       f"name the output ….{chosen.extension.lstrip('.')} or choose another --format.")
    return requested


def _run_edit(args: argparse.Namespace, operation: str, photo, mask) -> int:
    """Build ``operation``'s params from the options, run it on ``photo`` (and ``mask``), write
    each variant to ``--out`` (then -2, -3, …) in the chosen format and print what was made: the
    inpaint and outpaint commands' shared part."""
    settings = load_settings()
    quality = check_quality(settings.jpeg_quality if args.quality is None else args.quality)
    output_format = output_format_for(args.format, args.out, photo.format, args.image)
    apply_offline_mode(settings)
    manager = ModelManager(settings)
    if args.engine == AUTO_ENGINE:
        args.engine = best_diffusion_engine(manager)
        print(f"engine: {args.engine} ({manager.catalog.title(args.engine)})", file=sys.stderr)
    catalogs.current().engine(args.engine)  # an unknown engine: one line naming the known ones
    params_type = operations.OPERATIONS[operation].params
    params = params_type(**{field.name: getattr(args, field.name) for field in dataclasses.fields(params_type)
                            if field.metadata.get("option", True)})
    reference = load_reference(params.reference) if params.reference else None
    edit = operations.Edit(operation, params, reference_image=reference)
    quiet_library_progress()
    result = operations.run(edit, photo.rgb, mask, manager, progress=_progress)
    alpha = fit_alpha(photo.alpha, getattr(result, "canvas", None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    notes = list(result.notes)
    for index, image in enumerate(result.images):
        path = args.out if index == 0 else args.out.with_name(f"{args.out.stem}-{index + 1}{args.out.suffix}")
        encoded = encode_result(image, photo, output_format, params=result.metadata(index), quality=quality,
                                png_compression=settings.png_compression, alpha=alpha)
        path.write_bytes(encoded.data)
        notes += [f"{path.name}: {note}" for note in encoded.notes]
        print(f"{path}  {image.width}×{image.height}  seed {result.seeds[index]}  "
              f"seam ΔE {result.seam_delta_e[index]:.2f}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def inpaint_command(args: argparse.Namespace) -> int:
    photo = read_image(args.image, name=str(args.image))
    output_format_for(args.format, args.out, photo.format, args.image)  # before the mask is read
    mask_file = read_image(args.mask, name=str(args.mask))
    mask = mask_from_image(mask_file.rgb, photo.size, alpha=mask_file.alpha, resize=args.resize_mask,
                           name=str(args.mask))
    return _run_edit(args, "inpaint", photo, mask)


def outpaint_command(args: argparse.Namespace) -> int:
    photo = read_image(args.image, name=str(args.image))
    output_format_for(args.format, args.out, photo.format, args.image)
    params = {name: getattr(args, name) for name in ("left", "right", "top", "bottom", "aspect", "anchor")}
    OutpaintParams(**params).canvas(photo.size)  # the extension alone, checked before any model loads
    return _run_edit(args, "outpaint", photo, None)


def batch_command(args: argparse.Namespace) -> int:
    if args.format is not None:
        check_format(args.format, "--format")
    if args.quality is not None:
        check_quality(args.quality, "--quality")
    recipe = Recipe.load(args.recipe, args.reference)
    if args.engine == "local" and (args.ray_address or args.workers != 1 or args.gpus_per_worker):
        raise BadInput("--ray-address, --workers and --gpus-per-worker need --engine ray.")
    if args.workers < 1 or args.gpus_per_worker < 0 or args.cpus_per_worker <= 0:
        raise BadInput("--workers must be at least 1, --gpus-per-worker 0 or more, --cpus-per-worker above 0.")

    def report(progress: BatchProgress) -> None:
        row = progress.row
        mark = {"done": "ok", "failed": "FAILED", "skipped": "skipped", "cancelled": "cancelled"}[row["status"]]
        detail = ", ".join(row["outputs"]) if row["status"] == "done" else row["error"]
        print(f"[{progress.finished}/{progress.total}] {row['name']}: {mark}  {detail}", file=sys.stderr, flush=True)
        for note in row.get("notes", []) if row["status"] == "done" else []:
            print(f"    note: {note}", file=sys.stderr, flush=True)

    try:
        if args.engine == "ray":
            summary = run_ray(recipe, args.input, args.output, masks=args.masks, resume=args.resume,
                              address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                              cpus_per_worker=args.cpus_per_worker, on_progress=report,
                              output_format=args.format, quality=args.quality)
        else:
            summary = run(recipe, args.input, args.output, masks=args.masks, resume=args.resume, on_progress=report,
                          output_format=args.format, quality=args.quality)
    except ImportError as error:
        raise BadInput(f"--engine ray needs Ray: pip install -r requirements-distributed.txt ({error}).") from error
    print(summary.describe())
    return EXIT_OK if summary.ok else EXIT_FAILED


def serve_command(args: argparse.Namespace) -> int:
    from core.engine_server import serve_engines

    settings = load_settings()
    given = {"cpus": args.cpus_per_replica, "min_replicas": args.min_replicas, "max_replicas": args.max_replicas,
             "max_ongoing": args.max_ongoing_requests}
    serve = dataclasses.replace(settings.serve, **{key: value for key, value in given.items() if value is not None})
    if args.min_replicas is not None and args.max_replicas is None:
        serve = dataclasses.replace(serve, max_replicas=max(1, args.min_replicas))
    checks = [(serve.min_replicas >= 0, "--min-replicas must be 0 or more."),
              (serve.max_replicas is None or serve.max_replicas >= max(1, serve.min_replicas),
               "--max-replicas must be at least 1 and at least --min-replicas."),
              (serve.cpus > 0 and (args.gpus_per_replica or 0) >= 0, "--cpus-per-replica must be above 0 and "
                                                                      "--gpus-per-replica 0 or more."),
              (serve.max_ongoing is None or serve.max_ongoing >= 1, "--max-ongoing-requests must be at least 1."),
              (0 < args.port < 65536, f"--port {args.port}: give a port from 1 to 65535.")]
    for ok, message in checks:
        if not ok:
            raise BadInput(message)
    settings = dataclasses.replace(settings, serve=serve)
    apply_offline_mode(settings)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()] if args.engines else None
    try:
        serve_engines(settings, engines=engines, address=args.ray_address, host=args.host, port=args.port,
                      num_cpus=args.num_cpus, gpus=args.gpus_per_replica,
                      announce=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    print("Engine server stopped.", flush=True)
    return EXIT_OK


def models_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    catalog = catalogs.current(settings)
    if args.models_command == "list":
        found = model_files.local_models(settings, catalog)
        rows = [(m.role.name, m.status.configured, "present" if m.status.available else "missing",
                 model_files.human_size(m.size) if m.status.available else "", m.role.licence,
                 "" if m.status.available else m.role.fallback) for m in found]
        header = ("role", "configured", "here", "size", "licence", "fallback in use")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(5)]
        for row in [header, *rows]:
            print("  ".join(str(value).ljust(width) for value, width in zip(row, widths)) + "  " + row[5])
        print("\nEngines: " + "; ".join(f"{name} ({entry.title}, {entry.kind}"
                                         + (f", needs {', '.join(entry.roles)}" if entry.roles else "") + ")"
                                         for name, entry in catalog.engines.items()))
        missing = [m.role.name for m in found if not m.status.available]
        if missing:
            print(f"\nFetch them on a machine with internet: python -m core models download {' '.join(missing)}")
        return EXIT_OK
    for role in args.roles:
        catalog.model(role)  # UnknownName lists the roles
    gated = [catalog.model(role) for role in args.roles if catalog.model(role).gated]
    try:
        model_files.check_online(settings)
    except model_files.DownloadError as error:
        hints = [model_files.gated_hint(role) for role in gated if not model_files.has_hub_token()]
        raise model_files.DownloadError(" ".join([str(error), *hints])) from error
    lines, failed = [], []
    for role in args.roles or catalog.main_models():
        try:
            path = model_files.download(role, settings, args.dir, catalog=catalog,
                                        log=lambda text: print(text, file=sys.stderr, flush=True))
        except Exception as error:  # noqa: BLE001 (the hub, the network and the disk raise many types)
            print(f"error: {role}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                  file=sys.stderr)
            failed.append(role)
            continue
        lines.append(model_files.setting_line(catalog.model(role), path))
    if lines:
        print("# Point the app at the models (environment or .streamlit/secrets.toml):")
        print("\n".join(lines))
    return EXIT_FAILED if failed else EXIT_OK


COMMANDS = {"inpaint": inpaint_command, "outpaint": outpaint_command, "batch": batch_command,
            "serve": serve_command, "models": models_command}


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command (``argv``, default the process's arguments) and return its exit code."""
    try:
        parser = _parser(prog)
    except UserError as error:  # a setting (the catalog's modules) that cannot be used
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return EXIT_FAILED


def script() -> None:
    """The ``inpaint-studio`` command's entry point: :func:`main`, its code as the exit status."""
    sys.exit(main(prog=SCRIPT))
