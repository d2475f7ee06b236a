"""Which 1x1 stride-2 convolutions hang or crash torch's oneDNN backward in channels_last on this CPU.

Each shape runs forward + backward (three times) in its own process with a time limit, so a hang or a
segfault is recorded instead of stopping the probe. The library's guard (scanlearn.engine.execution) keeps
every such convolution with at most NARROW_CONV_CHANNELS input channels in NCHW on a CPU; this probe
is the evidence for that threshold. About 10 minutes when several shapes hang.

    .venv/bin/python benchmarks/cpu_guard_probe.py [--channels 2 4 8 16 32] [--limit 30]
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/cpu_guard_probe.py   # the AVX2 path on an AVX-512 host
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from datetime import date

from scanlearn.engine.execution import NARROW_CONV_CHANNELS, cpu_identity

STEP = """
import torch
torch.set_num_threads(2)
cin, hw, n = {cin}, {hw}, {n}
conv = torch.nn.Conv2d(cin, 2 * cin, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
x = torch.randn(n, cin, hw, hw).contiguous(memory_format=torch.channels_last)
for _ in range(3):
    conv(x).sum().backward()
"""


def outcome(cin: int, hw: int, n: int, limit: float) -> str:
    """``ok``, ``hang`` (no answer within ``limit`` seconds) or ``crash (exit code)`` for one shape."""
    try:
        done = subprocess.run([sys.executable, "-c", STEP.format(cin=cin, hw=hw, n=n)], capture_output=True,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        return "hang"
    return "ok" if done.returncode == 0 else f"crash ({done.returncode})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[2, 3, 4, 6, 8, 12, 16, 24, 32])
    parser.add_argument("--sizes", type=int, nargs="+", default=[14, 28, 32, 48])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--limit", type=float, default=30.0, help="seconds before a shape counts as hung")
    args = parser.parse_args()
    identity = cpu_identity()
    print(f"{identity['cpu']} ({identity['isa_flags']}); {identity['decision']}; {date.today()}")
    print(f"guard threshold: NCHW for <= {NARROW_CONV_CHANNELS} input channels")
    for cin in args.channels:
        failed = [
            f"{hw}x{hw} batch {n}: {result}"
            for hw, n in itertools.product(args.sizes, args.batches)
            if (result := outcome(cin, hw, n, args.limit)) != "ok"
        ]
        shapes = len(args.sizes) * len(args.batches)
        print(f"Conv2d({cin}, {2 * cin}, 1, stride=2): {shapes - len(failed)}/{shapes} ok"
              + (f"; {'; '.join(failed)}" if failed else ""), flush=True)


if __name__ == "__main__":
    main()
