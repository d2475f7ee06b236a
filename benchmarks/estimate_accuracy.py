"""The whole-run estimate against the time each stage took, from finished runs' ``timing.json``.

Every run writes ``RUN/timing.json`` (estimated and actual seconds per stage it ran). This collects them, with the
command that made each run and the machine, into one results file, and prints the table BENCHMARKS.md shows.

    benchmarks/estimate_accuracy.py --output benchmarks/results/estimate_accuracy_avx2.json \\
        --case "make demo 20m" runs/demo c801a88 "make demo" --case ...

A case already in the file under the same label is replaced; the others are kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from provenance import measured

TOLERANCE = 0.25  # the bound on |actual / estimate - 1| per stage
CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
# the table's extra ratios: actual over the estimate at the stage's start (``s``) and over the work done (``w``)
MARKS = (("s", "actual_over_estimate_at_start"), ("w", "actual_over_work_done"))


def case(label: str, run_dir: Path, run_commit: str, command: str) -> dict:
    """One run's estimated and actual seconds per stage, their ratio and whether it is within TOLERANCE."""
    timing = json.loads((run_dir / "timing.json").read_text())
    plan = json.loads((run_dir / "budget.json").read_text()) if (run_dir / "budget.json").is_file() else None
    stages = {stage: {**figures, "within": abs(figures["actual_over_estimate"] - 1) <= TOLERANCE}
              for stage, figures in timing.items()}
    if plan is not None and "estimated_work_done_s" not in stages.get("pretext", {"estimated_work_done_s": 0}):
        stages["pretext"] |= pretext_work_done(run_dir, plan, stages["pretext"]["actual_s"])
    return {"label": label, "run_dir": str(run_dir), "run_commit": run_commit, "command": command, "stages": stages,
            "budget_s": plan["budget"] if plan else None, **measured(),
            "cap": {name: os.environ[name] for name in CAPS if name in os.environ}}


def pretext_work_done(run_dir: Path, plan: dict, actual: float) -> dict:
    """For a budgeted run that predates ``timing.json``'s work-done figure: the plan's seconds for the pretext
    epochs it logged (fewer than planned when the deadline stopped it) and actual over that."""
    with (run_dir / "pretext" / "logs" / "metrics.csv").open() as log:
        epochs = 1 + max(int(row["epoch"]) for row in csv.DictReader(log))
    worked = plan["tails"]["pretext"] + epochs * plan["per_epoch"]["pretext"]
    return {"estimated_work_done_s": round(worked, 1), "actual_over_work_done": round(actual / worked, 3),
            "epochs_run": epochs, "work_done_from": "budget.json and pretext/logs/metrics.csv (benchmarks)"}


def table(cases: list[dict]) -> str:
    """Markdown rows: estimated / actual seconds = ratio per stage, then the other ratios (``MARKS``) known."""
    stages = ("pretext", "mine", "scan", "selflabel")
    lines = ["| run | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for item in cases:
        cells = []
        for stage in stages:
            figures = item["stages"].get(stage)
            if figures is None:
                cells.append("-")
                continue
            cells.append(f"{figures['estimated_s']:.1f} / {figures['actual_s']:.1f} = {figures['actual_over_estimate']:.2f}"
                         + "".join(f" {mark} {figures[key]:.2f}" for mark, key in MARKS if figures.get(key) is not None))
        lines.append(f"| {item['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="results file (JSON), updated in place")
    parser.add_argument("--case", nargs=4, action="append", default=[],
                        metavar=("LABEL", "RUN_DIR", "RUN_COMMIT", "COMMAND"),
                        help="a finished run to add: its label, directory, the commit it ran at and its command")
    args = parser.parse_args(argv)
    kept = json.loads(args.output.read_text())["cases"] if args.output.is_file() else []
    for label, run_dir, run_commit, command in args.case:
        if not (Path(run_dir) / "timing.json").is_file():
            print(f"estimate_accuracy: {run_dir} has no timing.json; finish the run first", file=sys.stderr)
            return 2
        kept = [item for item in kept if item["label"] != label] + [case(label, Path(run_dir), run_commit, command)]
    args.output.write_text(json.dumps({"tolerance": TOLERANCE, "cases": kept}, indent=1) + "\n")
    print(table(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
