"""Quality against time on Fashion-MNIST (issue 45): `scanlearn run --time-budget` at several budgets, and the full preset.

Each case is one `scanlearn run --preset fashion-mnist` in its own run directory (budgets 10, 20 and 40 minutes and
the full schedule by default; the 20-minute budget with three seeds), timed from the outside; then `scanlearn
predict --split test` assigns the test split with the run's chosen clustering, and that CSV alone is scored
against the test labels (ACC / NMI / ARI): the figures of what a user gets, chosen without labels. With
``--isa avx2`` every run is capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), as a CPU without
native bf16. Writes one JSON with the commit, CPU model, ISA flags, torch version and every case's figures.

    nice .venv/bin/python benchmarks/time_budget.py --root /tmp/budget --isa avx2
    nice .venv/bin/python benchmarks/time_budget.py --root /tmp/budget --isa native --budgets 20m --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from scanlearn.config import resolve
from scanlearn.engine.execution import cpu_identity
from scanlearn.engine.run import Run
from scanlearn.metrics import evaluate_clustering
from scanlearn.runs.artefacts import read_json

RESULTS = Path(__file__).resolve().parent / "results"
AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
FULL = "full"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder for the run directories (one per case)")
    parser.add_argument("--budgets", nargs="+", default=["10m", "20m", "40m", FULL],
                        help=f"budgets to run, `{FULL}` for the preset's full schedule (default 10m 20m 40m {FULL})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every budget (default 0)")
    parser.add_argument("--seeds-at", default="20m", metavar="BUDGET",
                        help="the budget also run with seeds 1 and 2 (default 20m; `none` for no extra seeds)")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="native: the CPU's own path; avx2: oneDNN and ATen capped at AVX2")
    parser.add_argument("--data-root", help="where Fashion-MNIST is (default: the loader's own search)")
    parser.add_argument("--output", type=Path, help="JSON to write (default benchmarks/results/time_budget_<isa>.json)")
    return parser.parse_args(argv)


def cases(budgets: list[str], seeds: list[int], seeds_at: str) -> list[tuple[str, int]]:
    """(budget, seed) pairs: every budget with ``seeds``, and ``seeds_at`` also with seeds 0, 1 and 2."""
    pairs = [(budget, seed) for budget in budgets for seed in seeds]
    if seeds_at in budgets:
        pairs += [(seeds_at, seed) for seed in (0, 1, 2) if (seeds_at, seed) not in pairs]
    return pairs


def scanlearn(args: list[str], env: dict[str, str]) -> None:
    """Run ``python -m scanlearn.cli ARGS`` to its end (a failure stops the benchmark)."""
    subprocess.run([sys.executable, "-m", "scanlearn.cli", *args], check=True, env=env)


def run_case(budget: str, seed: int, root: Path, env: dict[str, str], data_root: str | None) -> dict:
    """One run (with its budget, or the full schedule), its wall time, and the scores of `predict` on the test split."""
    run_dir = root / f"{budget}-seed{seed}"
    command = ["run", "--preset", "fashion-mnist", "--run-dir", str(run_dir), "--seed", str(seed),
               "--set", "runtime.progress=false"]
    command += ["--data-root", data_root] if data_root else []
    command += ["--time-budget", budget] if budget != FULL else []
    started = time.perf_counter()
    scanlearn(command, env)
    seconds = time.perf_counter() - started
    predictions = run_dir / "predictions_budget_test.csv"
    scanlearn(["predict", "--run-dir", str(run_dir), "--split", "test", "--output", str(predictions)], env)
    return {"budget": budget, "seed": seed, "wall_s": round(seconds, 1), "test": score(run_dir, predictions),
            "plan": read_json(run_dir / "budget.json") or None, "command": " ".join(command)}


def score(run_dir: Path, predictions: Path) -> dict[str, float]:
    """ACC / NMI / ARI of the clusters in ``predictions`` (one row per test image, in order) against the labels."""
    config = resolve(None, str(run_dir / "config.yaml"), [])
    targets = Run(config, run_dir).split("test").targets
    with open(predictions, newline="") as handle:
        clusters = np.array([int(row["cluster"]) for row in csv.DictReader(handle)])
    probs = np.eye(config.num_clusters or int(targets.max()) + 1, dtype=np.float32)[clusters]
    scores = evaluate_clustering(probs, targets)
    return {key: round(scores[key], 4) for key in ("acc", "nmi", "ari")}


def commit() -> str:
    """The checkout's commit (with ``-dirty`` when it has changes)."""
    here = Path(__file__).resolve().parent
    found = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run every case and write the JSON of figures."""
    args = parse_args(argv)
    env = {**os.environ, **(AVX2_CAP if args.isa == "avx2" else {})}
    output = args.output or RESULTS / f"time_budget_{args.isa}.json"
    results = {"commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "isa": args.isa, "env": {k: env[k] for k in AVX2_CAP if k in env}, "torch": torch.__version__,
               "cpu": cpu_identity(), "threads": torch.get_num_threads(), "cases": []}
    for budget, seed in cases(args.budgets, args.seeds, args.seeds_at):
        print(f"time_budget: {budget} seed {seed}", file=sys.stderr)
        results["cases"].append(run_case(budget, seed, args.root, env, args.data_root))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
