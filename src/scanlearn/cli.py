"""Command line: ``scanlearn pretext|mine|scan|selflabel|evaluate|run|predict|report|estimate-k|select``."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

from .arguments import AUTO, build_parser, DEFAULT_PRESET, FOUNDATION_PRESET, PHOTOS_PRESET
from .budget import as_seconds
from .config import Config, resolve, with_values
from .engine import distributed
from .engine.interrupt import Interrupted, handle_signals, keyboard_interrupts
from .engine.run import Run
from .engine.progress import messages_to_stderr
from .engine.training import lightning_info_hidden
from .errors import ConfigError, RunDirError, ScanlearnError, ScanlearnWarning
from .estimate_k import auto_range, estimate_k
from .data.datasets import is_image_folder
from .download_consent import download_wanted, DownloadOffer, on_terminal, read_line
from .folder_backbone import choose_backbone, FolderDefaults, read_choice
from .inspection import write_run_outputs
from .models.pretrained import is_pretrained
from .pipeline import metrics_table, run_stage, STAGE_RUNNERS, summarize
from .runner import Finished, run_whole
from .runs.artefacts import read_json
from .runs.fsutil import disk_full_error, is_disk_full, refuse_file_as_run_dir, run_dir_lock
from .runs.rundir import is_run_dir, MARKER_FILE, refuse_foreign_folder
from .selection import CandidateGrid, select_in_run
from .stages.evaluate import evaluate_stage
from .clustering.choice import final_stage
from .stages.predict import predict_folder, predict_images


def folder_defaults(args: argparse.Namespace) -> FolderDefaults | None:
    """For ``run --data DIR`` without --preset/--config/--backbone: the backbone choice (the recorded one on a rerun)."""
    if not training_data(args) or args.preset or args.config or getattr(args, "backbone", None):
        return None
    recorded = read_choice(args.run_dir or folder_run_dir(training_data(args)))
    if recorded is None and args.command != "run":
        return None
    choice = recorded or choose_backbone(getattr(args, "weights", None), getattr(args, "allow_download", False),
                                         ask=download_question(args))
    return FolderDefaults(choice, frozenset(item.partition("=")[0].strip() for item in args.overrides))


def download_question(args: argparse.Namespace) -> Callable[[DownloadOffer], bool] | None:
    """Without --allow-download / --no-download: on a terminal, the remembered answer, else one question (rank 0 asks;
    the other ranks, started after it answered, read the remembered answer)."""
    if getattr(args, "allow_download", False) or getattr(args, "no_download", False):
        return None
    return partial(download_wanted, terminal=on_terminal, read=read_at_prompt if distributed.is_rank_zero() else None)


def read_at_prompt(prompt: str) -> str:
    """One answer from the terminal, Ctrl-C raising KeyboardInterrupt there (no, this time) instead of stopping."""
    with keyboard_interrupts():
        return read_line(prompt)


def run_from_args(args: argparse.Namespace, defaults: FolderDefaults | None = None) -> Run:
    """The command's run: the config resolved from preset / file / overrides / flags, and the run directory."""
    check_flags(args)
    run_dir = Path(args.run_dir) if args.run_dir else None
    saved = run_dir / "config.yaml" if run_dir else None
    flag = lambda name: getattr(args, name, None)  # noqa: E731 - a command lists only the flags it uses
    if saved and saved.is_file() and not (args.preset or args.config) and args.command not in ("run",):
        config = resolve(None, str(saved), args.overrides)
    else:
        preset = args.preset or (None if args.config else default_preset(flag("backbone"), training_data(args)))
        if defaults is not None:
            preset = defaults.choice.preset
        config = resolve(preset, args.config, args.overrides)
    values = flag_values(args)
    if defaults is not None and defaults.choice.pretrained and "model.weights" not in values:
        values["model.weights"] = defaults.choice.weights
    config = with_values(config, values | data_flag_values(config, args))
    return Run(config, run_dir or default_run_dir(config))


FLAG_KEYS = {
    "data_root": "data.root", "seed": "runtime.seed", "deterministic": "runtime.deterministic",
    "devices": "runtime.devices", "num_nodes": "runtime.num_nodes", "index": "mine.index",
    "pretext_checkpoint": "model.pretext_checkpoint", "backbone": "model.backbone", "weights": "model.weights",
}


def flag_values(args: argparse.Namespace) -> dict[str, object]:
    """The config keys the command's flags set (a command lists only the flags it uses)."""
    given = {name: getattr(args, name, None) for name in FLAG_KEYS}
    return {FLAG_KEYS[name]: value for name, value in given.items() if value or (name == "seed" and value is not None)}


def check_flags(args: argparse.Namespace) -> None:
    """Checks of the flags alone, made before any file is read, naming the flag as typed."""
    clusters = getattr(args, "clusters", None)
    if isinstance(clusters, int) and clusters < 2:
        raise ConfigError(f"--clusters must be at least 2, got {clusters}; pass the number of groups to find, e.g. --clusters 5")
    if getattr(args, "range", None) is not None:
        parse_range(args.range)
    if getattr(args, "split", None) and args.data:
        raise ConfigError("--split and --data exclude each other: --split assigns a split of the run's own dataset, "
                          "--data a folder of new images; pass one of them")
    if getattr(args, "ks", None) and args.neighbours:
        raise ConfigError("--ks is the old name of --neighbours; pass only --neighbours")


def default_run_dir(config: Config) -> Path:
    """``runs/<folder name>-<6 hex digits of its absolute path>`` for an image folder (so two folders never
    share one), else ``runs/<preset name>``."""
    if is_image_folder(config.data.dataset) and config.data.root:
        return folder_run_dir(config.data.root)
    return Path("runs") / config.name


def folder_run_dir(folder: str | Path) -> Path:
    """``runs/<folder name>-<6 hex digits of its absolute path>``: the default run directory of an image folder."""
    root = Path(folder).expanduser().resolve()
    return Path("runs") / f"{root.name or 'root'}-{hashlib.sha256(str(root).encode(errors='surrogateescape')).hexdigest()[:6]}"


def training_data(args: argparse.Namespace) -> str | None:
    """``--data`` when it names the images to train on (for predict it names new images instead)."""
    return None if args.command == "predict" else args.data


def data_flag_values(config: Config, args: argparse.Namespace) -> dict[str, object]:
    """The config keys ``--data``, ``--clusters`` and ``--labels-from-folders`` set."""
    values: dict[str, object] = {}
    data = training_data(args)
    if data:
        root = str(Path(data).expanduser().resolve())
        if (config.data.dataset, config.data.root) != ("folder", root):
            values |= {"data.dataset": "folder", "data.root": root, "data.files": None}
    clusters = getattr(args, "clusters", None)
    if isinstance(clusters, int):
        values["num_clusters"] = clusters
    elif clusters == AUTO:
        values["num_clusters"] = None
    if getattr(args, "labels_from_folders", False):
        values["data.labels_from_folders"] = True
    return values


def default_preset(backbone: str | None, data: str | None = None) -> str:
    """Preset used without --preset/--config: frozen features for a pretrained backbone, photos for --data."""
    if backbone and is_pretrained(backbone):
        return FOUNDATION_PRESET
    return PHOTOS_PRESET if data else DEFAULT_PRESET


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command holding the run directory's lock (rank 0; the other ranks are its helpers)."""
    creates = args.command in ("run", "estimate-k", "select", *STAGE_RUNNERS)
    if args.run_dir and not creates:
        refuse_non_run(Path(args.run_dir))  # before its files are read or a lock file is written there
    defaults = folder_defaults(args)
    run = run_from_args(args, defaults)
    if creates:
        refuse_foreign_folder(run.directory)  # before the lock file is written into a folder that is not ours
    with run_dir_lock(run.directory, create=creates) if distributed.is_rank_zero() else nullcontext():
        return run_command(args, run, defaults)


def refuse_non_run(run_dir: Path) -> None:
    """A command that reads a finished run refuses an existing folder that is not one, before writing its lock there."""
    refuse_file_as_run_dir(run_dir)
    if run_dir.is_dir() and not is_run_dir(run_dir):
        raise RunDirError(f"{run_dir} is not a scanlearn run directory (no {MARKER_FILE} marker); nothing in it was "
                          "changed — pass the --run-dir of a finished run")


def run_command(args: argparse.Namespace, run: Run, defaults: FolderDefaults | None = None) -> int:
    """Run the chosen command on its run (resolved config and run directory)."""
    config, run_dir = run.config, run.directory
    if args.command == "run" or args.command in STAGE_RUNNERS:
        distributed.launch(config.runtime)
    elif not distributed.is_rank_zero():
        return 0
    if args.command == "run":
        finished = run_whole(run, args.clusters == AUTO, args.restart, defaults, as_seconds(args.time_budget))
        if distributed.is_rank_zero():
            print(finished_text(finished))
    elif args.command in STAGE_RUNNERS:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_stage(run, args.command, restart=args.restart)
    elif args.command == "evaluate":
        stage = args.stage or final_stage(run_dir)
        print(f"{stage}: {summarize(evaluate_stage(run, stage))}")
        print(metrics_table(read_json(run_dir / "metrics.json")))
    elif args.command == "predict":
        split = None if args.data else predict_split(args.split, config)
        output = Path(args.output) if args.output else run_dir / f"predictions_{Path(args.data).expanduser().resolve().name if args.data else split}.csv"
        if output.is_dir():
            raise ConfigError(f"--output {output} is a directory; pass a file name such as {output / 'assignments.csv'}")
        if args.data:
            probs = predict_folder(run, args.data, output, export=args.export)
        else:
            probs = predict_images(run, run.split(split), output)
        print(f"wrote {len(probs)} assignments to {output}")
    elif args.command == "report":
        write_run_outputs(run)
    elif args.command == "estimate-k":
        ks = parse_range(args.range) if args.range else auto_range(len(run.split("train")))
        if not (config.num_clusters or run.spec.num_classes):
            run = run.with_config(with_values(config, {"num_clusters": ks[0]}))  # the pretext stage's checks need a count
        estimate = estimate_k(run, ks)
        print(estimate.table())
        print(f"\nsuggested number of clusters: {estimate.best}  ({estimate.criterion})")
    elif args.command == "select":
        selection = select_in_run(run, candidate_grid(args, config), args.runs, args.criterion, args.consensus)
        print(selection.table())
        print(f"\nchosen by {selection.criterion}: {selection.chosen.name}  (all criteria in {run_dir / 'select'})")
    return 0


def predict_split(split: str | None, config: Config) -> str:
    """The split ``predict`` assigns: ``--split``, else test, or train for a run on a folder, whose train and test
    are both its own images (``--split test`` there would pass them off as unseen ones, so it is refused)."""
    if not is_image_folder(config.data.dataset):
        return split or "test"
    if split == "test":
        raise ConfigError("a run on a folder has no test split (it trained on all its images); drop --split to assign "
                          "them, or pass --data DIR to assign new images")
    return "train"


def candidate_grid(args: argparse.Namespace, config: Config) -> CandidateGrid:
    """The ``select`` candidates' grid from ``--seeds``, ``--entropy-weights``, ``--neighbours`` and ``--heads``."""
    return CandidateGrid(
        seeds=tuple(parse_list(args.seeds, int, "--seeds")),
        entropy_weights=tuple(parse_list(args.entropy_weights or str(config.scan.entropy_weight), float,
                                         "--entropy-weights")),
        ks=neighbour_counts(args, config),
        heads=args.heads,
        min_steps=args.steps,
    )


def neighbour_counts(args: argparse.Namespace, config: Config) -> tuple[int, ...]:
    """``--neighbours`` (or its old name ``--ks``, with a warning), else ``mine.k``."""
    if args.ks:
        warnings.warn("--ks is deprecated; pass --neighbours (same values)", ScanlearnWarning, stacklevel=2)
        return tuple(parse_list(args.ks, int, "--ks"))
    return tuple(parse_list(args.neighbours or str(config.mine.k), int, "--neighbours"))


def parse_list(text: str, kind: type, flag: str) -> list:
    """``'0,1,2'`` -> ``[0, 1, 2]`` of ``kind``; a malformed list is a ConfigError naming the flag."""
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} must be a comma-separated list of numbers, e.g. 0,1,2; got {text!r}") from None


def finished_text(finished: Finished) -> str:
    """What ``scanlearn run`` prints on stdout at its end: ``--clusters auto``'s table and choice, the test split's
    scores (with labels) and the run's summary."""
    parts = []
    if finished.estimate is not None:
        estimate = finished.estimate
        parts.append(f"{estimate.table()}\n\n--clusters auto: using {estimate.best} clusters ({estimate.criterion})")
    if "\n" in finished.scores:
        parts.append(f"\nResults on the test split ({finished.run.directory}):\n{finished.scores}")
    parts.append("\nSummary:\n" + "\n".join(finished.summary))
    return "\n".join(parts)


def parse_range(text: str) -> list[int]:
    """``'2:30'`` -> ``[2, 3, ..., 30]`` (inclusive), at least 2 clusters."""
    low, sep, high = text.partition(":")
    try:
        values = list(range(int(low), int(high) + 1)) if sep else [int(low)]
    except ValueError:
        raise ConfigError(f"--range must look like LO:HI with integers, e.g. 2:30; got {text!r}") from None
    if not values or values[0] < 2:
        raise ConfigError(f"--range must cover K >= 2 with LO <= HI, e.g. 2:30; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command (``scanlearn.main`` answers ``--help`` without importing this module)."""
    return run_parsed(build_parser().parse_args(argv))


def run_parsed(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line on stderr and exit code 2."""
    try:
        with handle_signals(ending=True), messages_to_stderr(), lightning_info_hidden(), one_line_warnings():
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


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """While a command runs, show scanlearn's own warnings as one ``scanlearn: warning:`` line and others as Python
    does; the process's previous ``warnings.showwarning`` is restored after."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, ScanlearnWarning) or f"{os.sep}scanlearn{os.sep}" in str(filename):
            print(f"scanlearn: warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
