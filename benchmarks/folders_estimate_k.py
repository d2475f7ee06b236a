"""How often ``scanlearn estimate-k`` finds the true number of categories of the development folders.

For every folder built by ``benchmarks/build_folders.py`` and every seed, runs ``scanlearn estimate-k`` on the
folder in the run directory ``benchmarks/folders.py`` uses (``RUN_ROOT/<name>-seed<seed>``): a run there keeps its
pretext and mining, so only the sweep over K is timed; without one, estimate-k trains them first. The folder's
category names (``ROOT/<name>.labels.csv``) are read only to count the true K; estimate-k never sees them.

Results (suggested K, true K, the per-K label-free scores, wall time, commit, CPU) go to
``benchmarks/results/folders_estimate_k.json``; a Markdown table is printed on stdout.

    .venv/bin/python benchmarks/folders_estimate_k.py --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from folders import chosen_folders, cli, merged_runs, read_labels, RESULTS, saved_results
from provenance import measured


def sweep(folder: Path, run_dir: Path, seed: int) -> dict:
    """One ``estimate-k`` on ``folder`` in ``run_dir``: its suggestion, criterion, per-K scores and wall time."""
    reused = (run_dir / "mine" / "done.json").is_file()
    wall = cli("estimate-k", "--data", str(folder), "--run-dir", str(run_dir), "--seed", str(seed),
               "--set", "runtime.progress=false")
    scores = json.loads((run_dir / "estimate_k" / "scores.json").read_text())
    return {"seed": seed, "suggested": scores["best"], "criterion": scores["criterion"], "scores": scores["scores"],
            "wall_s": round(wall, 1), "pretext_and_mine_reused": reused, **measured()}


def table(results: dict) -> str:
    """One Markdown row per folder and seed, then the hit rate."""
    lines = ["| folder | images | true K | seed | suggested K | range | sweep s |", "|---|---|---|---|---|---|---|"]
    hits = total = near = 0
    for name, entry in results["folders"].items():
        for run in entry["runs"]:
            ks = [s["k"] for s in run["scores"]]
            lines.append(f"| {name} | {entry['images']} | {entry['true_k']} | {run['seed']} | {run['suggested']} | "
                         f"{min(ks)}-{max(ks)} | {run['wall_s']:.0f} |")
            total += 1
            hits += run["suggested"] == entry["true_k"]
            near += abs(run["suggested"] - entry["true_k"]) <= 1
    lines.append(f"\nexact: {hits} of {total}; within one: {near} of {total}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data/folders"), help="the built folders")
    parser.add_argument("--only", nargs="+", help="these folders only (default: every built folder)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    parser.add_argument("--run-root", type=Path, default=Path("runs/bench-folders"))
    parser.add_argument("--out", type=Path, default=RESULTS / "folders_estimate_k.json")
    parser.add_argument("--table", action="store_true", help="print the table of the saved results and stop")
    args = parser.parse_args()
    results = saved_results(args.out)
    if not args.table:
        for name in chosen_folders(parser, args.root, args.only):
            paths, _, categories = read_labels(args.root, name)
            print(f"{name}: {len(paths)} images, true K={len(categories)}", file=sys.stderr)
            runs = [sweep(args.root / name, args.run_root / f"{name}-seed{seed}", seed) for seed in args.seeds]
            results["folders"][name] = {"images": len(paths), "true_k": len(categories),
                                        "runs": merged_runs(results["folders"].get(name, {}).get("runs", []), runs)}
            results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
            args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(table(results))


if __name__ == "__main__":
    main()
