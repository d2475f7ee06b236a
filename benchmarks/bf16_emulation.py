"""bf16 autocast against fp32 for one ResNet-18 training step on this CPU (64 images of 64x64, SGD).

Shows whether oneDNN's bf16 is native or emulated here: on AVX-512 CPUs without AVX-512 BF16 oneDNN still reports
bf16 support and emulates it. Writes benchmarks/results/bf16_emulation_<cpu flags>.json with the CPU model and flags.

    .venv/bin/python benchmarks/bf16_emulation.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch
import torchvision

from scanlearn.engine import execution

RESULTS = Path(__file__).parent / "results"


def step_seconds(model: torch.nn.Module, bf16: bool, repeats: int) -> float:
    """Mean wall seconds of a forward + backward + SGD step, after one warm-up step."""
    images = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(images).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=128)
    rounds = [{"fp32": step_seconds(model, False, args.repeats), "bf16": step_seconds(model, True, args.repeats)}
              for _ in range(2)]
    identity = execution.cpu_identity()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"command": "benchmarks/bf16_emulation.py", "commit": commit, "cores": torch.get_num_threads(),
              "torch": torch.__version__, "onednn_reports_bf16": execution.onednn_reports_bf16(),
              **identity, "seconds_per_step": rounds}
    name = identity["isa_flags"].replace(" ", "-")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bf16_emulation_{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
