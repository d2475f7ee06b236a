"""What a cheaper Fashion-MNIST schedule costs in accuracy, for CPUs without native bf16 (issue: AVX2).

On AVX2 the demo's time goes to the pretext (22 epochs) and to SCAN fine-tuning the whole network
(5 epochs). This benchmark takes a finished demo run and re-runs mining, SCAN and self-labelling with
the backbone frozen (heads on cached features, minutes instead of half an hour), starting from

* the demo's final pretext weights (``final``), and
* pretext checkpoints saved part-way through the demo's own pretext (``--checkpoint NAME=FILE``; the
  rolling ``pretext/checkpoints/last.ckpt`` copied after an epoch). Those weights come from the middle
  of the demo's 22-epoch cosine schedule, where the learning rate is still high, so their scores are a
  lower bound for a schedule of that many epochs run to its end.

Every run uses the ``fashion-mnist`` preset with only the freeze switches changed; nothing is chosen
with labels (the test split is scored, never used to pick). Writes one JSON of the figures.

    .venv/bin/python benchmarks/avx2_schedule.py --demo-run runs/demo --root /tmp/avx2 \
        --checkpoint 7=/tmp/pretext-ckpts/ckpt-06.ckpt --checkpoint 11=/tmp/pretext-ckpts/ckpt-10.ckpt
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from scanlearn.runs.artefacts import read_json
from scanlearn.runs.fsutil import load_verified

RESULTS = Path(__file__).resolve().parent / "results"
FROZEN = ["scan.freeze_backbone=true", "selflabel.freeze_backbone=true", "runtime.progress=false"]


def pretext_weights(source: Path, out: Path) -> Path:
    """A plain tensor dict of the contrastive model's weights, from the pretext stage's ``model.pt`` or
    from one of its Lightning checkpoints (keys ``model.backbone.*``), saved at ``out``."""
    state = load_verified(source)["state_dict"]
    if any(key.startswith("model.") for key in state):
        state = {key[len("model."):]: value for key, value in state.items() if key.startswith("model.")}
    torch.save(state, out)
    return out


def cpu_description() -> dict[str, str]:
    """CPU model, the ISA flags that decide precision, and torch's CPU capability."""
    flags = set()
    model = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
    return {"model": model, "flags": " ".join(f for f in wanted if f in flags),
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def frozen_run(name: str, weights: Path, root: Path, sets: list[str]) -> dict:
    """``scanlearn run`` of the preset from imported pretext weights, backbone frozen; figures and seconds."""
    run_dir = root / name
    command = [sys.executable, "-m", "scanlearn.cli", "run", "--preset", "fashion-mnist", "--run-dir", str(run_dir),
               "--pretext-checkpoint", str(weights)]
    for item in FROZEN + sets:
        command += ["--set", item]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    metrics = read_json(run_dir / "metrics.json")
    scores = {stage: {key: metrics[stage][key] for key in ("acc", "nmi", "ari")}
              for stage in ("scan", "selflabel") if stage in metrics}
    return {"name": name, "weights": str(weights), "seconds": round(seconds, 1), "test": scores,
            "command": " ".join(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-run", type=Path, required=True, help="a finished `make demo` run directory")
    parser.add_argument("--root", type=Path, required=True, help="where the frozen runs go")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="EPOCHS=FILE",
                        help="a pretext checkpoint saved after EPOCHS epochs of the demo's pretext")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra overrides for every run")
    parser.add_argument("--out", type=Path, default=RESULTS / "avx2_schedule.json")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    sources = {"final": args.demo_run / "pretext" / "model.pt"}
    sources |= {f"epoch{epochs}": Path(file) for epochs, file in (c.split("=", 1) for c in args.checkpoint)}
    runs = []
    for name, source in sources.items():
        weights = pretext_weights(source, args.root / f"{name}.pt")
        runs.append(frozen_run(name, weights, args.root, args.sets))
        print(json.dumps(runs[-1]), flush=True)
    demo = read_json(args.demo_run / "metrics.json")
    record = {"date": date.today().isoformat(), "cpu": cpu_description(), "cores": torch.get_num_threads(),
              "demo_test": {stage: {key: demo[stage][key] for key in ("acc", "nmi", "ari")}
                            for stage in ("scan", "selflabel") if stage in demo},
              "frozen_runs": runs}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
