"""Command line: ``scanlearn pretext|mine|scan|selflabel|evaluate|run|predict|report|estimate-k``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

from . import __version__, distributed
from .config import Config, preset_names, resolve, validate
from .errors import ConfigError, ScanlearnError, ScanlearnWarning
from .estimate_k import estimate_k
from .folder_backbone import FolderDefaults, choose_backbone, read_choice
from .fsutil import disk_full_error, is_disk_full, run_dir_lock
from .interrupt import Interrupted, handle_signals
from .models.pretrained import is_pretrained
from .rundir import refuse_foreign_folder
from .pipeline import STAGE_RUNNERS, metrics_table, run_pipeline, run_stage, summarize, warn_if_clusters_empty
from .stages.common import load_split, read_json
from .stages.evaluate import evaluate_stage
from .stages.inspection import write_run_outputs
from .stages.predict import final_stage, predict_folder, predict_images

DEFAULT_PRESET = "fashion-mnist"
PHOTOS_PRESET = "photos"
FOUNDATION_PRESET = "dinov2-vits14"
AUTO = "auto"


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every command shares: config sources, overrides, data and run directory."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--preset", help=f"preset name ({', '.join(preset_names())}); default {DEFAULT_PRESET}")
    group.add_argument("--config", metavar="FILE.yaml", help="YAML config file (applied on top of the preset)")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override one config value, e.g. --set scan.epochs=5 (repeatable)")
    group.add_argument("--run-dir", metavar="DIR", help="run directory (default runs/<preset>)")
    group.add_argument("--data-root", metavar="DIR", help="where the dataset files are")
    group.add_argument("--data", metavar="PATH",
                       help="a folder of your own images (any depth; jpg/png/webp/bmp/tiff); without --preset "
                            f"the {PHOTOS_PRESET} preset is used. For predict: the images to assign")
    group.add_argument("--clusters", type=clusters_value, metavar="K",
                       help="number of clusters to find, or auto: run estimate-k first and use its answer")
    group.add_argument("--labels-from-folders", action="store_true",
                       help="take each image's first-level subfolder name as its true class (for scoring only)")
    group.add_argument("--seed", type=int, help="seed for every random number generator")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic algorithms only: same seed + same hardware = identical results")
    group.add_argument("--devices", help="devices to train on, e.g. 1, 4 or 0,1 (default auto)")
    group.add_argument("--num-nodes", type=int, metavar="M",
                       help="machines to train on (DDP; each runs the same command with --devices processes)")
    group.add_argument("--pretext-checkpoint", metavar="FILE",
                       help="import pretext weights (MoCo v2 or torchvision ResNet) instead of training them")
    group.add_argument("--backbone", metavar="NAME",
                       help="backbone, e.g. resnet18-cifar or a pretrained timm:vit_small_patch14_dinov2.lvd142m / "
                            "torchvision:resnet50 (join two with + to concatenate their features); "
                            f"a pretrained one without --preset starts from the {FOUNDATION_PRESET} preset")
    group.add_argument("--weights", metavar="FILE",
                       help="local weights file of a pretrained --backbone (one per backbone, joined by +); "
                            "default: the library's own download")


def build_parser() -> argparse.ArgumentParser:
    """The ``scanlearn`` argument parser with one sub-command per stage."""
    parser = argparse.ArgumentParser(prog="scanlearn", description="Group images into classes without labels (SCAN).")
    parser.add_argument("--version", action="version", version=f"scanlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "pretext": "stage 1: self-supervised SimCLR features",
        "mine": "stage 2: mine the K nearest neighbours of every image",
        "scan": "stage 3: train clustering heads with the SCAN loss",
        "selflabel": "stage 4: fine-tune on confident predictions",
    }
    for name, text in helps.items():
        add_common(commands.add_parser(name, help=text, description=text))
        commands.choices[name].add_argument(
            "--restart", action="store_true", help="discard this stage's and later stages' work and run it again"
        )
    evaluate = commands.add_parser("evaluate", help="score a finished stage on the test split")
    add_common(evaluate)
    evaluate.add_argument("--stage", choices=["scan", "selflabel"], help="stage to evaluate (default: the last finished)")
    run = commands.add_parser("run", help="run every stage not yet complete, then evaluate",
                              description="Chain pretext, mine, scan and selflabel; completed stages are skipped.")
    add_common(run)
    run.add_argument("--restart", action="store_true",
                     help="delete the run's stages and results (keeping its feature cache) and start over")
    run.add_argument("--allow-download", action="store_true",
                     help="for --data without --preset: download the pretrained backbone's weights when they are "
                          "not cached (the size is shown first); without it an offline run trains from scratch")
    for name in ("mine", "run"):
        commands.choices[name].add_argument(
            "--index", choices=["flat", "ivf"], help="neighbour index: flat (exact) or ivf (approximate, large N)"
        )
    predict = commands.add_parser("predict", help="assign clusters to a split with a finished run")
    add_common(predict)
    predict.add_argument("--split", default="test", choices=["train", "test"], help="split to predict (default test)")
    predict.add_argument("--output", metavar="CSV", help="output CSV (default RUN/assignments.csv)")
    predict.add_argument("--export", metavar="DIR",
                         help="also put the images into DIR/cluster_<k>/ (hard links, else symlinks, else copies)")
    report = commands.add_parser("report", help="write RUN/report.html and RUN/figures/ for a finished run")
    add_common(report)
    estimate = commands.add_parser(
        "estimate-k", help="suggest a number of clusters without labels",
        description="Train cheap SCAN heads on frozen pretext features for every K in a range and suggest one "
                    "(trains the pretext stage first unless the run directory has it).",
    )
    add_common(estimate)
    estimate.add_argument("--range", default="5:30", metavar="LO:HI", help="values of K to try, inclusive (default 5:30)")
    return parser


def clusters_value(text: str) -> int | str:
    """``--clusters``: a number of clusters, or ``auto``."""
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of clusters or {AUTO}, got {text!r}") from None


def folder_defaults(args: argparse.Namespace) -> FolderDefaults | None:
    """For ``run --data DIR`` without --preset/--config/--backbone: the backbone choice (the recorded one on a rerun)."""
    if not training_data(args) or args.preset or args.config or args.backbone:
        return None
    recorded = read_choice(args.run_dir) if args.run_dir else None
    if recorded is None and args.command != "run":
        return None
    choice = recorded or choose_backbone(args.weights, getattr(args, "allow_download", False))
    return FolderDefaults(choice, frozenset(item.partition("=")[0].strip() for item in args.overrides))


def config_from_args(args: argparse.Namespace, defaults: FolderDefaults | None = None) -> tuple[Config, Path]:
    """Resolve the config (preset / file / overrides / flags) and the run directory."""
    run_dir = Path(args.run_dir) if args.run_dir else None
    saved = run_dir / "config.yaml" if run_dir else None
    if saved and saved.is_file() and not (args.preset or args.config) and args.command not in ("run",):
        config = resolve(None, str(saved), args.overrides)
    else:
        preset = args.preset or (None if args.config else default_preset(args.backbone, training_data(args)))
        if defaults is not None:
            preset = defaults.choice.preset
        config = resolve(preset, args.config, args.overrides)
        if defaults is not None and defaults.choice.pretrained:
            config.model.weights = defaults.choice.weights
    if args.data_root:
        config.data.root = args.data_root
    if args.seed is not None:
        config.runtime.seed = args.seed
    if args.deterministic:
        config.runtime.deterministic = True
    if args.devices:
        config.runtime.devices = args.devices
    if args.num_nodes:
        config.runtime.num_nodes = args.num_nodes
    if getattr(args, "index", None):
        config.mine.index = args.index
    if args.pretext_checkpoint:
        config.model.pretext_checkpoint = args.pretext_checkpoint
    if args.backbone:
        config.model.backbone = args.backbone
    if args.weights:
        config.model.weights = args.weights
    apply_data_flags(config, args)
    return validate(config), run_dir or Path("runs") / config.name


def training_data(args: argparse.Namespace) -> str | None:
    """``--data`` when it names the images to train on (for predict it names new images instead)."""
    return None if args.command == "predict" else args.data


def apply_data_flags(config: Config, args: argparse.Namespace) -> None:
    """``--data``, ``--clusters`` and ``--labels-from-folders`` onto the config."""
    data = training_data(args)
    if data:
        root = str(Path(data).expanduser().resolve())
        if (config.data.dataset, config.data.root) != ("folder", root):
            config.data.dataset, config.data.root, config.data.files = "folder", root, None
    if isinstance(args.clusters, int):
        config.num_clusters = args.clusters
    elif args.clusters == AUTO:
        config.num_clusters = None
    if args.labels_from_folders:
        config.data.labels_from_folders = True


def default_preset(backbone: str | None, data: str | None = None) -> str:
    """Preset used without --preset/--config: frozen features for a pretrained backbone, photos for --data."""
    if backbone and is_pretrained(backbone):
        return FOUNDATION_PRESET
    return PHOTOS_PRESET if data else DEFAULT_PRESET


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command holding the run directory's lock (rank 0; the other ranks are its helpers)."""
    defaults = folder_defaults(args)
    config, run_dir = config_from_args(args, defaults)
    creates = args.command in ("run", "estimate-k", *STAGE_RUNNERS)
    if creates:
        refuse_foreign_folder(run_dir)  # before the lock file is written into a folder that is not ours
    with run_dir_lock(run_dir, create=creates) if distributed.is_rank_zero() else nullcontext():
        return run_command(args, config, run_dir, defaults)


def run_command(args: argparse.Namespace, config: Config, run_dir: Path, defaults: FolderDefaults | None = None) -> int:
    """Run the chosen command with its resolved config and run directory."""
    if args.command == "run" or args.command in STAGE_RUNNERS:
        distributed.launch(config.runtime)
    elif not distributed.is_rank_zero():
        return 0
    if args.command == "run":
        choose = auto_clusters if args.clusters == AUTO else None
        metrics = run_pipeline(config, run_dir, restart=args.restart, defaults=defaults, choose_clusters=choose)
        if distributed.is_rank_zero():
            table = metrics_table(metrics)
            if "\n" in table:
                print(f"\nResults on the test split ({run_dir}):\n{table}")
            write_run_outputs(config, run_dir)
            warn_if_clusters_empty(run_dir)
    elif args.command in STAGE_RUNNERS:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_stage(config, run_dir, args.command, restart=args.restart)
    elif args.command == "evaluate":
        stage = args.stage or final_stage(run_dir)
        print(f"{stage}: {summarize(evaluate_stage(config, run_dir, stage))}")
        print(metrics_table(read_json(run_dir / "metrics.json")))
    elif args.command == "predict":
        output = Path(args.output) if args.output else run_dir / "assignments.csv"
        if output.is_dir():
            raise ConfigError(f"--output {output} is a directory; pass a file name such as {output / 'assignments.csv'}")
        if args.data:
            probs = predict_folder(config, run_dir, args.data, output, export=args.export)
        else:
            probs = predict_images(config, run_dir, load_split(config, args.split), output)
        print(f"wrote {len(probs)} assignments to {output}")
    elif args.command == "report":
        write_run_outputs(config, run_dir)
    elif args.command == "estimate-k":
        estimate = estimate_k(config, run_dir, parse_range(args.range))
        print(estimate.table())
        print(f"\nsuggested number of clusters: {estimate.best}  ({estimate.criterion})")
    return 0


def auto_clusters(config: Config, run_dir: Path) -> int:
    """``--clusters auto``: run estimate-k over ``auto_range`` and use its answer (its table is printed)."""
    estimate = estimate_k(config, run_dir, auto_range(len(load_split(config, "train"))))
    print(estimate.table())
    print(f"\n--clusters auto: using {estimate.best} clusters ({estimate.criterion})")
    return estimate.best


def auto_range(n_images: int) -> list[int]:
    """K tried by ``--clusters auto``: 2 up to 20, at most one cluster per 20 images (estimate-k needs 2 per K)."""
    return list(range(2, max(3, min(20, n_images // 20)) + 1))


def parse_range(text: str) -> list[int]:
    """``'5:30'`` -> ``[5, 6, ..., 30]`` (inclusive), at least 2 clusters."""
    low, sep, high = text.partition(":")
    try:
        values = list(range(int(low), int(high) + 1)) if sep else [int(low)]
    except ValueError:
        raise ConfigError(f"--range must look like LO:HI with integers, e.g. 5:30; got {text!r}") from None
    if not values or values[0] < 2:
        raise ConfigError(f"--range must cover K >= 2 with LO <= HI, e.g. 5:30; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.showwarning = one_line_warning
    handler = log_to_stderr()
    try:
        with handle_signals():
            return dispatch(args)
    except ScanlearnError as exc:
        print(f"scanlearn: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a full disk or an unusable path is the user's to fix, not a traceback
        if not (is_disk_full(exc) or isinstance(exc, OSError)):
            raise
        print(f"scanlearn: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"scanlearn: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        logging.getLogger("scanlearn").removeHandler(handler)


def log_to_stderr() -> logging.Handler:
    """Show scanlearn's progress messages (e.g. each stage's device, precision and layout) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("scanlearn: %(message)s"))
    logger = logging.getLogger("scanlearn")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def os_error_message(exc: Exception) -> str:
    """One line for a full disk (whatever raised it) or another operating-system error on a path."""
    cause = exc
    while not isinstance(cause, OSError) and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    where = getattr(cause, "filename", None)
    if is_disk_full(exc):
        return str(disk_full_error(where or "the run directory"))
    return (f"{cause.strerror or cause} ({where or 'a file of the run'}); check that the path exists and is "
            "writable, then rerun the same command")


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Show scanlearn's own warnings as one ``scanlearn: warning:`` line; others as Python does."""
    if issubclass(category, ScanlearnWarning) or f"{os.sep}scanlearn{os.sep}" in str(filename):
        print(f"scanlearn: warning: {message}", file=sys.stderr)
    else:
        DEFAULT_SHOWWARNING(message, category, filename, lineno, file, line)


DEFAULT_SHOWWARNING = warnings.showwarning


if __name__ == "__main__":
    sys.exit(main())
