"""The command line's parser: every command, its flags and their help.

It imports nothing heavy (no torch, no Lightning), so ``scanlearn --help`` answers at once; the
package front (``scanlearn.main``) parses with it before importing ``cli``, which runs the command.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .registry import preset_names
from .version import __version__

# The label-free criteria ``select`` offers (``selection.HIGHER_IS_BETTER`` gives their direction; a test keeps
# the two lists equal) and the one it uses by default.
CRITERIA = ("generalisation", "neighbour_kappa", "scan_loss", "stability")
DEFAULT_CRITERION = "stability"

DEFAULT_PRESET = "fashion-mnist"
PHOTOS_PRESET = "photos"
FOUNDATION_PRESET = "dinov2-vits14"
AUTO = "auto"


TRAINING = ("pretext", "mine", "scan", "selflabel", "run")
# Flag groups each command shows: a command lists only the flags it uses.
COMMAND_FLAGS = {
    **{name: ("data", "clusters", "labels", "seed", "devices", "nodes", "model") for name in (*TRAINING, "select")},
    "evaluate": ("data", "labels", "weights"),
    "report": ("data", "labels", "weights"),
    "predict": ("data", "weights"),
    "estimate-k": ("data", "seed", "devices", "model"),
}


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The configuration flags ``command`` uses: config sources and run directory, then its own groups."""
    used = COMMAND_FLAGS[command]
    group = parser.add_argument_group("configuration")
    defaults = (f"default: RUN/config.yaml, else {DEFAULT_PRESET}" if command == "predict" else
                f"default: {PHOTOS_PRESET} with --data, {FOUNDATION_PRESET} with a pretrained --backbone, "
                f"else {DEFAULT_PRESET}")
    group.add_argument("--preset", help=f"preset name ({', '.join(preset_names())}); {defaults}")
    group.add_argument("--config", metavar="FILE.yaml", help="YAML config file (applied on top of the preset)")
    group.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override one config value, e.g. --set scan.epochs=5 (repeatable)")
    group.add_argument("--run-dir", metavar="DIR", help="the finished run to use (default runs/<preset>)" if command == "predict"
                       else "run directory (default runs/<folder name>-<hash of its path> for --data, else runs/<preset>)")
    group.add_argument("--data-root", metavar="DIR", help="where the files of a named dataset (e.g. cifar10) are")
    if command == "predict":
        group.add_argument("--data", metavar="PATH", help="a folder of new images to assign (any depth)")
    else:
        group.add_argument("--data", metavar="PATH",
                           help="a folder of your own images (any depth; jpg/png/webp/bmp/tiff); without --preset "
                                f"the {PHOTOS_PRESET} preset is used")
    if "clusters" in used:
        group.add_argument("--clusters", type=clusters_value, metavar="K",
                           help="number of clusters to find (at least 2), or auto: run estimate-k first and use its answer")
    if "labels" in used:
        group.add_argument("--labels-from-folders", action="store_true",
                           help="take each image's first-level subfolder name as its true class (for scoring only)")
    if "seed" in used:
        group.add_argument("--seed", type=int, help="seed for every random number generator")
        group.add_argument("--deterministic", action="store_true",
                           help="deterministic algorithms only: same seed + same hardware = identical results")
    if "devices" in used:
        group.add_argument("--devices", help="devices to use, e.g. 1, 4 or 0,1 (default auto)")
    if "nodes" in used:
        group.add_argument("--num-nodes", type=int, metavar="M",
                           help="machines to train on (DDP; each runs the same command with --devices processes)")
    if "model" in used:
        group.add_argument("--pretext-checkpoint", metavar="FILE",
                           help="import pretext weights (MoCo v2 or torchvision ResNet) instead of training them")
        group.add_argument("--backbone", metavar="NAME",
                           help="backbone, e.g. resnet18-cifar or a pretrained timm:vit_small_patch14_dinov2.lvd142m / "
                                "torchvision:resnet50 (join two with + to concatenate their features); "
                                f"a pretrained one without --preset starts from the {FOUNDATION_PRESET} preset")
    if "model" in used or "weights" in used:
        group.add_argument("--weights", metavar="FILE",
                           help="local weights file of a pretrained --backbone (one per backbone, joined by +); "
                                "default: the library's own download")


def add_command(commands: argparse._SubParsersAction, name: str, text: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command with its one-line help, its description and the flags it uses."""
    parser = commands.add_parser(name, help=text, description=description or text[0].upper() + text[1:] + ".")
    add_flags(parser, name)
    return parser


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one ``scanlearn: error:`` line (exit 2), like every other refusal."""

    def error(self, message: str) -> NoReturn:
        """Print the problem and where the valid flags are listed, then exit 2."""
        print(f"scanlearn: error: {message}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``scanlearn`` argument parser with one sub-command per stage."""
    parser = OneLineParser(prog="scanlearn", description="Group images into classes without labels (SCAN).")
    parser.add_argument("--version", action="version", version=f"scanlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "pretext": "stage 1: self-supervised SimCLR features",
        "mine": "stage 2: mine the K nearest neighbours of every image",
        "scan": "stage 3: train clustering heads with the SCAN loss",
        "selflabel": "stage 4: fine-tune on confident predictions",
    }
    for name, text in helps.items():
        add_command(commands, name, text).add_argument(
            "--restart", action="store_true", help="discard this stage's and later stages' work and run it again"
        )
    evaluate = add_command(commands, "evaluate", "score a finished stage on the test split")
    evaluate.add_argument("--stage", choices=["scan", "selflabel"], help="stage to evaluate (default: the last finished)")
    run = add_command(commands, "run", "run every stage not yet complete, then evaluate",
                      "Chain pretext, mine, scan and selflabel; completed stages are skipped, an interrupted one resumes.")
    run.add_argument("--restart", action="store_true",
                     help="delete the run's stages and results (keeping its feature cache) and start over")
    downloads = run.add_mutually_exclusive_group()
    downloads.add_argument("--allow-download", action="store_true",
                           help="for --data without --preset: download the pretrained backbone's weights when they "
                                "are not cached (the size is shown first), without asking")
    downloads.add_argument("--no-download", action="store_true",
                           help="for --data without --preset: never download weights and do not ask. Without either "
                                "flag a run on a terminal asks once (the answer remembered in "
                                "~/.config/scanlearn/downloads.json); a run without a terminal trains from scratch")
    run.add_argument("--time-budget", metavar="DURATION",
                     help="fit the schedule to this much time on this machine, e.g. 20m, 1h or 90s (measured before "
                          "training; a slow stage gives up epochs, not the deadline; a resumed run keeps its schedule)")
    for name in ("mine", "run"):
        commands.choices[name].add_argument(
            "--index", choices=["flat", "ivf"], help="neighbour index: flat (exact) or ivf (approximate, large N)"
        )
    predict = add_command(commands, "predict", "assign clusters to a split or a folder of new images with a finished run",
                          "Assign every image of a split (or of --data FOLDER) to a cluster of a finished run; "
                          "writes a CSV and, with --export, the files sorted into one folder per cluster.")
    predict.add_argument("--split", choices=["train", "test"],
                         help="which images of the run's own dataset to assign: a named dataset's train or test split "
                              "(default test); a run on a folder has only its own images, train (the default there). "
                              "New images go with --data DIR instead")
    predict.add_argument("--output", metavar="CSV",
                         help="output CSV (default RUN/predictions_<split or folder name>.csv; "
                              "the run's own assignments.csv is never replaced unless named here)")
    predict.add_argument("--export", metavar="DIR",
                         help="also put the images into DIR/cluster_<k>/<their path below --data> "
                              "(hard links, else symlinks, else copies)")
    add_command(commands, "report", "write RUN/report.html and RUN/figures/ for a finished run")
    estimate = add_command(
        commands, "estimate-k", "suggest a number of clusters without labels",
        "Train cheap SCAN heads on frozen pretext features for every K in a range and suggest one "
        "(trains the pretext stage first unless the run directory has it).",
    )
    estimate.add_argument("--range", metavar="LO:HI",
                          help="values of K to try, inclusive (default: 2 up to one cluster per 20 images, at most 20)")
    add_select(commands)
    return parser


def add_select(commands: argparse._SubParsersAction) -> None:
    """``select``: score candidate clusterings by label-free criteria and keep one."""
    text = "choose among candidate clusterings without labels (label-free criteria)"
    select = commands.add_parser("select", help=text, description=(
        f"{text}: trains SCAN heads on the run's frozen features for every seed x entropy weight x neighbour count "
        "(or scores the finished --runs), records every candidate's criteria in RUN/select/ and keeps the best."))
    add_flags(select, "select")
    select.add_argument("--runs", nargs="+", metavar="DIR", default=[],
                        help="finished run directories to choose from instead of training candidates")
    select.add_argument("--seeds", default="0,1", metavar="LIST", help="candidate seeds (default 0,1)")
    select.add_argument("--entropy-weights", metavar="LIST", help="candidate entropy weights (default: the config's)")
    select.add_argument("--neighbours", metavar="LIST",
                        help="candidate numbers of mined neighbours per image, at most mine.k (default: mine.k)")
    select.add_argument("--ks", metavar="LIST", help=argparse.SUPPRESS)  # deprecated name of --neighbours
    select.add_argument("--heads", type=int, default=2, help="heads per grid point, each one candidate (default 2)")
    select.add_argument("--steps", type=int, default=1000,
                        help="at least this many training steps per candidate, 30 epochs on large data (default 1000)")
    select.add_argument("--criterion", default=DEFAULT_CRITERION, choices=CRITERIA,
                        help=f"label-free criterion that chooses (default {DEFAULT_CRITERION})")
    select.add_argument("--consensus", action="store_true",
                        help="also write the candidates' majority-vote consensus (RUN/select/consensus.npy)")


def clusters_value(text: str) -> int | str:
    """``--clusters``: a number of clusters, or ``auto``."""
    if text == AUTO:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of clusters or {AUTO}, got {text!r}") from None
