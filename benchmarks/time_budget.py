"""Quality against time on Fashion-MNIST (issue 45): `scanlearn run --time-budget` at several budgets, and the full preset.

Each case is one `scanlearn run --preset fashion-mnist` in its own run directory (budgets 10, 20 and 40 minutes and
the full schedule by default; the 20-minute budget with three seeds), timed from the outside; then `scanlearn
predict --split test` assigns the test split with the run's chosen clustering, and that CSV alone is scored
against the test labels (ACC / NMI / ARI): the figures of what a user gets, chosen without labels. With
``--isa avx2`` every run is capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), as a CPU without
native bf16. Writes one JSON with the commit, CPU model, ISA flags, torch version and every case's figures; each
case also records its own commit, date and CPU, as cases may come from different sessions.

When the JSON exists, its cases are kept and only the (budget, seed) cases it lacks are run and appended.
``--adopt RUN_DIR`` adds a finished run made elsewhere (e.g. by ``make demo``) as one case without training: it is
scored as above (``predict`` writes its CSV into RUN_DIR) with the budget, seed, wall seconds and command given.
After every write, and alone with ``--plot-only``, a PNG beside the JSON (same stem) plots ACC and NMI against the
wall minutes each case used.

    nice .venv/bin/python benchmarks/time_budget.py --root /tmp/budget --isa avx2
    nice .venv/bin/python benchmarks/time_budget.py --root /tmp/budget --isa native --budgets 20m --seeds 0
    .venv/bin/python benchmarks/time_budget.py --isa avx2 --adopt runs/demo --adopt-budget 25m --adopt-seed 0 \\
        --adopt-wall 1425 --adopt-command "make demo"
    .venv/bin/python benchmarks/time_budget.py --isa avx2 --plot-only
    .venv/bin/python benchmarks/time_budget.py --isa avx2 --rescore --root /tmp/budget

``--rescore`` runs `predict` again on every case's run directory (after a change to which clustering a run
answers with), keeping the earlier scores and their commit under ``earlier``; the training is not repeated.
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

from provenance import commit, measured
from scanlearn.budget import parse_duration
from scanlearn.config import resolve
from scanlearn.engine.execution import cpu_identity
from scanlearn.engine.run import Run
from scanlearn.metrics import evaluate_clustering
from scanlearn.runs.artefacts import read_json

RESULTS = Path(__file__).resolve().parent / "results"
AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
FULL = "full"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (a usage error when a mode lacks what it needs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="folder for the run directories (one per case); needed to train")
    parser.add_argument("--budgets", nargs="+", default=["10m", "20m", "40m", FULL],
                        help=f"budgets to run, `{FULL}` for the preset's full schedule (default 10m 20m 40m {FULL})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every budget (default 0)")
    parser.add_argument("--seeds-at", default="20m", metavar="BUDGET",
                        help="the budget also run with seeds 1 and 2 (default 20m; `none` for no extra seeds)")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="native: the CPU's own path; avx2: oneDNN and ATen capped at AVX2")
    parser.add_argument("--data-root", help="where Fashion-MNIST is (default: the loader's own search)")
    parser.add_argument("--output", type=Path, help="JSON to write (default benchmarks/results/time_budget_<isa>.json)")
    parser.add_argument("--plot-only", action="store_true", help="only draw the PNG of the JSON, running nothing")
    parser.add_argument("--rescore", action="store_true", help="run predict again on every case's run, no training")
    parser.add_argument("--adopt", type=Path, metavar="RUN_DIR", help="score this finished run as a case, no training")
    parser.add_argument("--adopt-budget", help="the adopted run's budget (e.g. 20m, or full)")
    parser.add_argument("--adopt-seed", type=int, default=0, help="the adopted run's seed (default 0)")
    parser.add_argument("--adopt-wall", type=float, metavar="SECONDS", help="the adopted run's wall time in seconds")
    parser.add_argument("--adopt-command", default="", help="the command that made the adopted run, recorded")
    args = parser.parse_args(argv)
    if args.adopt and (args.adopt_budget is None or args.adopt_wall is None):
        parser.error("--adopt needs --adopt-budget and --adopt-wall")
    if args.rescore and not args.root:
        parser.error("--rescore needs --root (where the cases' run directories are)")
    if not (args.plot_only or args.adopt or args.root):
        parser.error("--root is needed to train (or use --adopt or --plot-only)")
    return args


def cases(budgets: list[str], seeds: list[int], seeds_at: str) -> list[tuple[str, int]]:
    """(budget, seed) pairs: every budget with ``seeds``, and ``seeds_at`` also with seeds 0, 1 and 2."""
    pairs = [(budget, seed) for budget in budgets for seed in seeds]
    if seeds_at in budgets:
        pairs += [(seeds_at, seed) for seed in (0, 1, 2) if (seeds_at, seed) not in pairs]
    return pairs


class Refused(Exception):
    """`scanlearn run` refused the budget before training (exit 2); the message is its error line."""


def scanlearn(args: list[str], env: dict[str, str]) -> None:
    """Run ``python -m scanlearn.cli ARGS`` to its end, its stderr passed through; Refused on a usage refusal (exit 2),
    CalledProcessError on any other failure (either stops the case)."""
    command = [sys.executable, "-m", "scanlearn.cli", *args]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    errors = []
    for line in process.stderr:
        sys.stderr.write(line)
        errors += [line.strip()] if line.startswith("scanlearn: error:") else []
    if process.wait() == 2 and errors:
        raise Refused(errors[-1])
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, args)


def train_case(budget: str, seed: int, run_dir: Path, env: dict[str, str], data_root: str | None) -> tuple[float, str]:
    """One `scanlearn run` (with its budget, or the full schedule) into ``run_dir``: its wall seconds and command."""
    command = ["run", "--preset", "fashion-mnist", "--run-dir", str(run_dir), "--seed", str(seed),
               "--set", "runtime.progress=false"]
    command += ["--data-root", data_root] if data_root else []
    command += ["--time-budget", budget] if budget != FULL else []
    started = time.perf_counter()
    scanlearn(command, env)
    return time.perf_counter() - started, " ".join(command)


def scored_case(budget: str, seed: int, run_dir: Path, seconds: float, command: str, env: dict[str, str]) -> dict:
    """A finished run's case: `predict` on the test split, its scores, the run's plan and this session's provenance."""
    predictions = run_dir / "predictions_budget_test.csv"
    scanlearn(["predict", "--run-dir", str(run_dir), "--split", "test", "--output", str(predictions)], env)
    return {"budget": budget, "seed": seed, "wall_s": round(seconds, 1), "test": score(run_dir, predictions),
            "plan": read_json(run_dir / "budget.json") or None, "command": command, **provenance(env)}


def provenance(env: dict[str, str]) -> dict:
    """This session's commit, date, CPU and torch (``measured``), with the cap the runs were given in place of the
    fast path of this uncapped process."""
    found = {key: value for key, value in measured().items() if key != "decision"}
    return {**found, "cap": {key: env[key] for key in AVX2_CAP if key in env}}


def run_case(budget: str, seed: int, root: Path, env: dict[str, str], data_root: str | None) -> dict:
    """One run (with its budget, or the full schedule), its wall time, and the scores of `predict` on the test split;
    a budget the run refused is recorded with its error line instead of scores."""
    run_dir = root / f"{budget}-seed{seed}"
    try:
        seconds, command = train_case(budget, seed, run_dir, env, data_root)
    except Refused as refusal:
        return {"budget": budget, "seed": seed, "refused": str(refusal), **provenance(env)}
    return scored_case(budget, seed, run_dir, seconds, command, env)


def adopted_case(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """A finished run made elsewhere, scored as `run_case` scores its own (the provenance is the scoring session's)."""
    case = scored_case(args.adopt_budget, args.adopt_seed, args.adopt, args.adopt_wall, args.adopt_command, env)
    sessions = (read_json(args.adopt / "environment.json") or {}).get("sessions", [])
    return {**case, "adopted": {"run_dir": str(args.adopt.resolve()),
                                "run_started": sessions[0].get("started") if sessions else None}}


def score(run_dir: Path, predictions: Path) -> dict[str, float]:
    """ACC / NMI / ARI of the clusters in ``predictions`` (one row per test image, in order) against the labels."""
    config = resolve(None, str(run_dir / "config.yaml"), [])
    targets = Run(config, run_dir).split("test").targets
    with open(predictions, newline="") as handle:
        clusters = np.array([int(row["cluster"]) for row in csv.DictReader(handle)])
    probs = np.eye(config.num_clusters or int(targets.max()) + 1, dtype=np.float32)[clusters]
    scores = evaluate_clustering(probs, targets)
    return {key: round(scores[key], 4) for key in ("acc", "nmi", "ari")}


def fresh_results(isa: str, env: dict[str, str]) -> dict:
    """The top-level record of a new JSON: this session's commit, date, ISA, CPU and torch, and no cases."""
    return {"commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "isa": isa, "env": {k: env[k] for k in AVX2_CAP if k in env}, "torch": torch.__version__,
            "cpu": cpu_identity(), "threads": torch.get_num_threads(), "cases": []}


def load_results(output: Path, isa: str, env: dict[str, str]) -> dict:
    """The JSON at ``output`` to add to (its top-level record kept), else a fresh one; SystemExit on another ISA."""
    if not output.is_file():
        return fresh_results(isa, env)
    results = json.loads(output.read_text())
    if results.get("isa") != isa:
        sys.exit(f"time_budget: {output} holds --isa {results.get('isa')} cases, not {isa}; choose another --output")
    return results


def held(results: dict) -> set[tuple[str, int]]:
    """The (budget, seed) cases the results already hold."""
    return {(case["budget"], case["seed"]) for case in results["cases"] + results.get("refused", [])}


def save(results: dict, output: Path) -> None:
    """Write the results JSON, then its plot."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    plot(output)


def by_budget(cases_: list[dict]) -> dict[str, list[dict]]:
    """The cases grouped by budget, in the order the budgets first appear."""
    groups: dict[str, list[dict]] = {}
    for case in cases_:
        groups.setdefault(case["budget"], []).append(case)
    return groups


def points(cases_: list[dict], metric: str) -> list[tuple[float, float, str, bool]]:
    """(wall minutes, score, budget, is a mean) of every case, and of each budget's mean over its seeds."""
    found = []
    for budget, group in by_budget(cases_).items():
        xy = [(case["wall_s"] / 60, case["test"][metric]) for case in group]
        found += [(x, y, budget, False) for x, y in xy]
        if len(xy) > 1:
            found.append((*np.mean(xy, axis=0).tolist(), f"{budget} mean", True))
    return found


def title(results: dict) -> str:
    """The plot's title: the runs' ISA path (with the cap they were given) and the CPU model with its flags."""
    cap = " ".join(f"{key}={value}" for key, value in results.get("env", {}).items())
    cpu = results.get("cpu", {})
    return (f"Fashion-MNIST under time budgets, ISA path: {results.get('isa')}{f' ({cap})' if cap else ''}\n"
            f"{cpu.get('cpu', '?')} [{cpu.get('isa_flags', '?')}]")


def plot(output: Path) -> Path:
    """Draw ACC and NMI against wall minutes for the cases of the JSON at ``output`` into a PNG of its stem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = json.loads(output.read_text())
    figure, axes = plt.subplots(figsize=(8, 5))
    for metric, marker, colour in (("acc", "o", "tab:blue"), ("nmi", "s", "tab:orange")):
        for x, y, label, mean in points(results["cases"], metric):
            series = f"{metric.upper()} (mean of seeds)" if mean else metric.upper()
            axes.scatter(x, y, marker=marker, s=100 if mean else 36, edgecolors=colour,
                         facecolors="none" if mean else colour, label=series)
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    handles, labels = axes.get_legend_handles_labels()
    legend = dict(zip(labels, handles))  # one entry per series
    axes.legend(legend.values(), legend.keys())
    budgets = {case["budget"] for case in results["cases"] if case["budget"] != FULL}
    for minutes in sorted(parse_duration(budget) / 60 for budget in budgets):
        axes.axvline(minutes, color="grey", linestyle=":", linewidth=1)
    longest = max([case["wall_s"] / 60 for case in results["cases"]] + [parse_duration(b) / 60 for b in budgets])
    axes.set(xlabel="wall minutes used by scanlearn run (dotted: the budgets)", ylabel="test-split score (predict)",
             xlim=(0, longest * 1.1), ylim=(0, 1))
    axes.set_title(title(results), fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output.with_suffix(".png"), dpi=120)
    plt.close(figure)
    return output.with_suffix(".png")


def adopt(args: argparse.Namespace, results: dict, output: Path, env: dict[str, str]) -> None:
    """Add the run of ``--adopt`` as a case and save (SystemExit when the JSON already holds its budget and seed)."""
    if (args.adopt_budget, args.adopt_seed) in held(results):
        sys.exit(f"time_budget: {output} already holds {args.adopt_budget} seed {args.adopt_seed}")
    results["cases"].append(adopted_case(args, env))
    save(results, output)


def rescore(args: argparse.Namespace, results: dict, output: Path, env: dict[str, str]) -> None:
    """`predict` again on every case's run (its adopted directory, else ``--root``'s), the earlier scores kept."""
    for index, case in enumerate(results["cases"]):
        named = args.root / f"{case['budget']}-seed{case['seed']}"
        run_dir = Path(case["adopted"]["run_dir"]) if "adopted" in case else named
        if not run_dir.is_dir():
            print(f"time_budget: {run_dir} is gone; its case keeps its scores", file=sys.stderr)
            continue
        fresh = scored_case(case["budget"], case["seed"], run_dir, case["wall_s"], case["command"], env)
        earlier = case.get("earlier", []) + [{key: case[key] for key in ("test", "commit", "date")}]
        updated = {key: fresh[key] for key in ("test", "commit", "date")}
        results["cases"][index] = {**case, **updated, "earlier": earlier}
    save(results, output)


def run_missing(args: argparse.Namespace, results: dict, output: Path, env: dict[str, str]) -> None:
    """Run every asked case the JSON lacks, saving after each."""
    for budget, seed in cases(args.budgets, args.seeds, args.seeds_at):
        if (budget, seed) in held(results):
            print(f"time_budget: {budget} seed {seed} already in {output}, skipped", file=sys.stderr)
            continue
        print(f"time_budget: {budget} seed {seed}", file=sys.stderr)
        case = run_case(budget, seed, args.root, env, args.data_root)
        (results.setdefault("refused", []) if "refused" in case else results["cases"]).append(case)
        save(results, output)


def main(argv: list[str] | None = None) -> int:
    """Adopt a run, or run the missing cases, writing the JSON and its plot; or only plot."""
    args = parse_args(argv)
    output = args.output or RESULTS / f"time_budget_{args.isa}.json"
    if args.plot_only:
        print(plot(output))
        return 0
    env = {**os.environ, **(AVX2_CAP if args.isa == "avx2" else {})}
    results = load_results(output, args.isa, env)
    (adopt if args.adopt else rescore if args.rescore else run_missing)(args, results, output, env)
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
