"""The whole-run estimate against the time each stage took, from finished runs' ``timing.json``.

Every run writes ``RUN/timing.json`` (estimated and actual seconds per stage it ran). This collects them, with the
command that made each run and the machine, into one results file, and prints the table BENCHMARKS.md shows.

    benchmarks/estimate_accuracy.py --output benchmarks/results/estimate_accuracy_avx2.json \\
        --case "make demo 20m" runs/demo "make demo" --case ...

A case already in the file under the same label is replaced; the others are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from provenance import measured

TOLERANCE = 0.25  # the bound on |actual / estimate - 1| per stage
CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def case(label: str, run_dir: Path, command: str) -> dict:
    """One run's estimated and actual seconds per stage, their ratio and whether it is within TOLERANCE."""
    timing = json.loads((run_dir / "timing.json").read_text())
    stages = {stage: {**figures, "within": abs(figures["actual_over_estimate"] - 1) <= TOLERANCE}
              for stage, figures in timing.items()}
    plan = run_dir / "budget.json"
    return {"label": label, "run_dir": str(run_dir), "command": command, "stages": stages,
            "budget_s": json.loads(plan.read_text())["budget"] if plan.is_file() else None, **measured(),
            "cap": {name: os.environ[name] for name in CAPS if name in os.environ}}


def table(cases: list[dict]) -> str:
    """Markdown rows: estimated / actual seconds = ratio, per stage."""
    stages = ("pretext", "mine", "scan", "selflabel")
    lines = ["| run | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    for item in cases:
        cells = []
        for stage in stages:
            figures = item["stages"].get(stage)
            cells.append("-" if figures is None else
                         f"{figures['estimated_s']:.1f} / {figures['actual_s']:.1f} = {figures['actual_over_estimate']:.2f}")
        lines.append(f"| {item['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="results file (JSON), updated in place")
    parser.add_argument("--case", nargs=3, action="append", default=[], metavar=("LABEL", "RUN_DIR", "COMMAND"),
                        help="a finished run to add: its label, directory and the command that made it")
    args = parser.parse_args(argv)
    kept = json.loads(args.output.read_text())["cases"] if args.output.is_file() else []
    for label, run_dir, command in args.case:
        if not (Path(run_dir) / "timing.json").is_file():
            print(f"estimate_accuracy: {run_dir} has no timing.json; finish the run first", file=sys.stderr)
            return 2
        kept = [item for item in kept if item["label"] != label] + [case(label, Path(run_dir), command)]
    args.output.write_text(json.dumps({"tolerance": TOLERANCE, "cases": kept}, indent=1) + "\n")
    print(table(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
