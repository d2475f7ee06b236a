"""How well does ``scanlearn estimate-k`` recover the true number of classes of Fashion-MNIST (10)?

Trains (or reuses) the Fashion-MNIST pretext model in ``--run-dir``, sweeps K over ``--range``
with frozen-feature SCAN heads for each ``--seeds`` value, and prints a Markdown report: the
command, the date, every K's label-free scores, the suggested K per seed and, for reference
only, each K's NMI / many-to-one accuracy against the true labels (never used to choose K).

    .venv/bin/python benchmarks/estimate_k.py --run-dir runs/estimate-k --limit 20000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scanlearn.cli import parse_range
from scanlearn.config import resolve
from scanlearn.estimate_k import KEstimate, SweepSettings, estimate_k
from scanlearn.metrics import evaluate_clustering
from scanlearn.engine.run import Run

TRUE_K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/estimate-k", help="run directory (pretext is trained there once)")
    parser.add_argument("--range", default="5:30", help="values of K, inclusive")
    parser.add_argument("--limit", type=int, default=20000, help="training images used (0 = all 60,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sweep seeds")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="config override KEY=VALUE")
    parser.add_argument("--output", help="also write the Markdown report to this file")
    return parser.parse_args(argv)


def reference_scores(estimate: KEstimate, targets: np.ndarray) -> dict[int, dict[str, float]]:
    """NMI and many-to-one accuracy of each K's clusters against the true labels (reporting only)."""
    result = {}
    for k, clusters in estimate.labels.items():
        scores = evaluate_clustering(np.eye(k)[clusters], targets, TRUE_K)
        result[k] = {"nmi": scores["nmi"], "acc_many_to_one": scores["acc_many_to_one"], "acc": scores["acc"]}
    return result


def markdown(args: argparse.Namespace, runs: list[tuple[int, KEstimate, dict, float]], command: str) -> str:
    """The benchmark report: settings, per-K table of the first seed, suggestions of every seed."""
    first_seed, first, reference, _ = runs[0]
    lines = [
        "# estimate-k on Fashion-MNIST", "",
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; training images: {args.limit or 60000}; true K = {TRUE_K}.", "",
        f"Criterion: {first.criterion}.", "",
        f"## Scores per K (seed {first_seed})", "",
        "| K | SCAN loss | consistency | balance | used | confident | agreement | coherence | NMI* | ACC many-to-one* |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in first.scores:
        ref = reference[s.k]
        mark = " **<**" if s.k == first.best else ""
        lines.append(f"| {s.k}{mark} | {s.loss:.4f} | {s.consistency:.4f} | {s.balance:.3f} | {s.used} | "
                     f"{s.confident:.3f} | {s.agreement:.3f} | {s.coherence:.3f} | {ref['nmi']:.3f} | "
                     f"{ref['acc_many_to_one']:.3f} |")
    lines += ["", "\\* computed with the true labels for reference only; estimate-k never sees them.", "",
              "## Suggested K per seed", "", "| seed | suggested K | sweep time (s) |", "|---|---|---|"]
    lines += [f"| {seed} | {estimate.best} | {seconds:.0f} |" for seed, estimate, _, seconds in runs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the sweep for every seed and print (and optionally save) the Markdown report."""
    args = parse_args(argv)
    overrides = [*args.overrides, *( [f"data.limit={args.limit}"] if args.limit else [])]
    config = resolve("fashion-mnist", None, overrides)
    targets = None
    runs = []
    for seed in args.seeds:
        started = time.perf_counter()
        settings = SweepSettings(entropy_weight=config.scan.entropy_weight, seed=seed)
        estimate = estimate_k(Run(config, Path(args.run_dir)), parse_range(args.range), settings)
        seconds = time.perf_counter() - started
        if targets is None:
            targets = np.asarray(Run(config, Path(args.run_dir)).split("train").targets)
        runs.append((seed, estimate, reference_scores(estimate, targets), seconds))
        print(estimate.table(), f"\nseed {seed}: suggested K = {estimate.best}", flush=True)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    report = markdown(args, runs, command)
    print(report)
    if args.output:
        Path(args.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
