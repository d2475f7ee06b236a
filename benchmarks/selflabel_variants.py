"""Self-labelling variants on finished imbalanced runs (issue 31): does any setting make SCAN + self-label better?

For every seed, copies the ``<prior>-frozen`` run directory that `benchmarks/imbalanced.py` left (SCAN done), reruns
only the self-label stage with the variant's overrides on top of the same recipe, and prints the test ACC/NMI
(labels only score) next to the label-free neighbour kappa of SCAN and of the new self-labelling on the train
split. Adds its variants to benchmarks/results/selflabel_variants_ratio<R>_scale<S>.json.

    .venv/bin/python benchmarks/selflabel_variants.py --run-root RUNS --ratio 10 --scale 0.25 \\
        --variant base= --variant clean=selflabel.augment.kind=none --variant nobalance=selflabel.balance=false
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from imbalanced import FROZEN_RECIPE, PRIOR_OVERRIDES, RESULTS, cli, run_name


def rerun_selflabel(source: Path, target: Path, data: Path, seed: int, overrides: list[str]) -> dict:
    """Self-labelling again in a copy of ``source`` with ``overrides``; test scores and kappa of SCAN and of it."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True)
    cli("selflabel", target, data, seed, overrides, "--restart")
    result = {}
    for stage in ("scan", "selflabel"):
        scores = json.loads((target / stage / "eval_test.json").read_text())
        kappa = json.loads((target / stage / "candidate.json").read_text())["neighbour_kappa"]
        result[stage] = {"acc": scores["acc"], "nmi": scores["nmi"], "ari": scores["ari"], "kappa": kappa}
    return result


def merged(out: Path, table: dict, args: argparse.Namespace) -> dict:
    """The results file with this invocation's variants added or replaced; each variant keeps the command that ran it."""
    ran = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "seeds": args.seeds, "prior": args.prior}
    variants = json.loads(out.read_text())["variants"] if out.is_file() else {}
    return {"variants": variants | {name: ran | row for name, row in table.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-root", required=True, help="the --run-root of benchmarks/imbalanced.py")
    parser.add_argument("--ratio", type=float, default=10.0)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prior", default="estimated", choices=sorted(PRIOR_OVERRIDES))
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=key=value[,key=value...]: self-label overrides of one variant (NAME= for none)")
    parser.add_argument("--set", dest="overrides", action="append", default=["pretext.epochs=40"],
                        help="the overrides the runs were made with beyond the frozen recipe")
    args = parser.parse_args()
    tag = f"ratio{args.ratio:g}_scale{args.scale:g}"
    base = FROZEN_RECIPE + args.overrides + PRIOR_OVERRIDES[args.prior]
    table = {}
    for spec in args.variant:
        name, _, listed = spec.partition("=")
        extra = [item for item in listed.split(",") if item]
        runs = []
        for seed in args.seeds:
            root = Path(args.run_root) / tag / f"seed{seed}"
            source = root / run_name(args.prior, "frozen", selected=False)
            runs.append(rerun_selflabel(source, Path(f"{source}-selflabel-{name}"), root / "data", seed, base + extra))
        mean = {stage: {key: float(np.mean([r[stage][key] for r in runs])) for key in runs[0][stage]}
                for stage in ("scan", "selflabel")}
        table[name] = {"overrides": extra, "mean": mean, "per_seed": runs}
        sl, scan = mean["selflabel"], mean["scan"]
        print(f"{name:<12} self-label ACC {sl['acc']:.4f} NMI {sl['nmi']:.4f} kappa {sl['kappa']:.4f}   "
              f"(SCAN ACC {scan['acc']:.4f} NMI {scan['nmi']:.4f} kappa {scan['kappa']:.4f})")
    out = RESULTS / f"selflabel_variants_{tag}.json"
    out.write_text(json.dumps(merged(out, table, args), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
