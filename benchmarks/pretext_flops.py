"""How close to the machine the pretext step runs (issue 45): FLOPs per image, achieved FLOP/s, share of peak.

For one preset's SimCLR training step (two augmented views of a batch through backbone + projection head in one
forward, NT-Xent, backward, optimiser step), built as the pipeline builds it (``build_contrastive_model``, the
preset's ``augmenter`` and optimiser, and the device, precision and layout ``engine.execution`` decides on this CPU):

- FLOPs, counted by ``torch.utils.flop_counter.FlopCounterMode`` on a meta-device copy of the model at the real
  batch shape (no arithmetic is done to count): forward and forward + backward, per view and per step.
  Only matrix products and convolutions are counted (batch norm, activations and the optimiser are not).
- wall time per step at the preset's batch size: the batch augmentation (two views of random uint8 images of
  the decoded size) and the model step apart, medians of ``--steps`` steps after ``--warmup`` steps;
- the cores' peak: threads x clock x FLOPs per cycle per core of the ISA the step runs on, and the share of it
  the model step achieves. ``ONEDNN_MAX_CPU_ISA=AVX2`` or ``ATEN_CPU_CAPABILITY=avx2`` makes the peak AVX2's.

Results go to ``benchmarks/results/pretext_flops_<isa>.json`` (one entry per preset and batch size, replaced
one by one) with the commit, CPU model, ISA flags, torch version and cores. Table on stdout, progress on stderr.

    .venv/bin/python benchmarks/pretext_flops.py                        # fashion-mnist, its batch of 256
    .venv/bin/python benchmarks/pretext_flops.py --preset photos --steps 10
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python benchmarks/pretext_flops.py
    .venv/bin/python benchmarks/pretext_flops.py --steps 2 --warmup 1 --batch-size 8 --threads 1 --output /tmp/x.json
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from provenance import measured
from scanlearn.config import Config, resolve
from scanlearn.engine.execution import (ExecutionPlan, cpu_flags, cpu_has_native_bf16,
                                        onednn_isa_cap, plan_execution)
from scanlearn.engine.loaders import augmenter
from scanlearn.engine.splits import data_spec, decode_size
from scanlearn.engine.trained import build_contrastive_model
from scanlearn.engine.training import make_optimizer
from scanlearn.losses import nt_xent_loss
from scanlearn.models import ContrastiveModel

RESULTS = Path(__file__).resolve().parent / "results"
# FLOPs per cycle per core: 2 FMA units x SIMD lanes x 2 (multiply + add); bf16 dot products do 2 pairs per fp32 lane.
FLOPS_PER_CYCLE = {"avx512_bf16": 2 * 32 * 2, "avx512": 2 * 16 * 2, "avx2": 2 * 8 * 2, "sse": 2 * 4 * 2}
ASSUMPTIONS = [
    "2 FMA units per core (not visible on a VM; a 1-FMA-unit SKU halves the peak and doubles the share)",
    "peak clock = the nominal clock of /proc/cpuinfo 'model name' (else 'cpu MHz'); turbo or throttling differ",
    "avx512_bf16 peak = AVX512_BF16 dot products (vdpbf16ps); AMX tiles, where present, are not counted",
    "FLOPs = FlopCounterMode's matrix products and convolutions only; batch norm, activations, optimiser excluded",
    "one thread per core: peak scales with torch.get_num_threads()",
]


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def env_caps_avx2() -> bool:
    """Whether ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY keeps the arithmetic below AVX-512."""
    cap = onednn_isa_cap()
    onednn_capped = cap not in ("DEFAULT", "ALL") and not cap.startswith(("AVX512", "AVX10"))
    return onednn_capped or torch.backends.cpu.get_cpu_capability() != "AVX512"


def compute_isa(plan: ExecutionPlan) -> str:
    """The ISA the step's arithmetic runs on: ``avx512_bf16``, ``avx512``, ``avx2`` or ``sse``."""
    flags = cpu_flags()
    has = (lambda flag: True) if flags is None else (lambda flag: flag in flags)  # noqa: E731
    if has("avx512f") and not env_caps_avx2():
        return "avx512_bf16" if plan.autocast_bf16 and cpu_has_native_bf16() else "avx512"
    return "avx2" if has("avx2") and has("fma") else "sse"


def clock_ghz() -> tuple[float, str]:
    """The cores' clock in GHz and where it was read: '@ X.XXGHz' in 'model name', else 'cpu MHz'."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    named = re.search(r"^model name\s*:.*@\s*([\d.]+)\s*GHz", info, re.MULTILINE)
    if named:
        return float(named.group(1)), "model name"
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.MULTILINE)
    return (float(mhz.group(1)) / 1000, "cpu MHz") if mhz else (float("nan"), "unknown")


def peak(plan: ExecutionPlan) -> dict:
    """Peak GFLOP/s of the threads torch uses, with the figures it is made of."""
    isa = compute_isa(plan)
    ghz, source = clock_ghz()
    threads = torch.get_num_threads()
    return {"isa": isa, "flops_per_cycle_per_core": FLOPS_PER_CYCLE[isa], "clock_ghz": ghz, "clock_source": source,
            "threads": threads, "gflops": threads * ghz * FLOPS_PER_CYCLE[isa], "assumptions": ASSUMPTIONS}


def count_flops(model: ContrastiveModel, views: torch.Size, temperature: float) -> dict[str, int]:
    """FLOPs of the model forward, the loss forward and the backward of both, on a meta copy (no arithmetic)."""
    meta = copy.deepcopy(model).to("meta").train()
    x = torch.empty(views, device="meta")
    with FlopCounterMode(display=False) as counter:
        z = meta(x)
    model_forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss = nt_xent_loss(*z.chunk(2), temperature)
    loss_forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss.backward()
    return {"model_forward": model_forward, "loss_forward": loss_forward, "backward": counter.get_total_flops()}


def train_step(model: ContrastiveModel, optimizer: torch.optim.Optimizer, views: torch.Tensor, plan: ExecutionPlan,
               temperature: float) -> float:
    """One pretext step as PretextModule runs it under Lightning: forward + loss under the plan's autocast,
    zero_grad, backward, optimiser step; returns the loss (read back, as the module logs it)."""
    with plan.autocast():
        z1, z2 = model(views).chunk(2)
        loss = nt_xent_loss(z1, z2, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def timed_steps(config: Config, model: ContrastiveModel, plan: ExecutionPlan, images: torch.Tensor,
                steps: int, warmup: int) -> dict[str, list[float]]:
    """Wall seconds of the augmentation (two views) and of the model step, for each timed step."""
    augment = augmenter(config.pretext.augment, data_spec(config))
    optimizer = make_optimizer(model.parameters(), config.pretext.optim)
    times: dict[str, list[float]] = {"augment": [], "model_step": []}
    for step in range(warmup + steps):
        start = time.perf_counter()
        views = torch.cat([augment(images), augment(images)])
        middle = time.perf_counter()
        loss = train_step(model, optimizer, views, plan, config.pretext.temperature)
        end = time.perf_counter()
        kind = "warm-up" if step < warmup else "timed"
        progress(f"  {kind} step {step + 1}/{warmup + steps}: augment {middle - start:.3f} s, "
                 f"model {end - middle:.3f} s, loss {loss:.3f}")
        if step >= warmup:
            times["augment"].append(middle - start)
            times["model_step"].append(end - middle)
    return times


def measure(preset: str, batch_size: int | None, steps: int, warmup: int, extra: list[str]) -> dict:
    """FLOPs, step times and share of peak of the preset's pretext step on this CPU (``extra``: config overrides)."""
    overrides = ["runtime.accelerator=cpu", "runtime.progress=false", *extra]
    if batch_size:
        overrides.append(f"pretext.batch_size={batch_size}")
    config = resolve(preset, None, overrides)
    torch.manual_seed(config.runtime.seed)
    spec = data_spec(config)
    model = build_contrastive_model(config, spec)
    plan = plan_execution(config.runtime, model)
    model = plan.apply(model).train()
    batch = config.pretext.batch_size
    side = decode_size(spec)
    images = torch.randint(0, 256, (batch, spec.channels, side, side), dtype=torch.uint8)
    views_shape = torch.Size([2 * batch, *augmenter(config.pretext.augment, spec)(images[:1]).shape[1:]])
    progress(f"{preset}: {config.model.backbone} width {config.model.width}, batch {batch} x 2 views of "
             f"{tuple(views_shape[1:])} (decoded {side} px); {plan.describe()}; {torch.get_num_threads()} threads")
    flops = count_flops(model, views_shape, config.pretext.temperature)
    forward = flops["model_forward"] + flops["loss_forward"]
    train = forward + flops["backward"]
    views = 2 * batch
    progress(f"  counted {forward / views / 1e6:.1f} MFLOPs forward, "
             f"{train / views / 1e6:.1f} forward + backward per view")
    times = timed_steps(config, model, plan, images, steps, warmup)
    seconds = {f"{key}_median": statistics.median(values) for key, values in times.items()}
    seconds["step_median"] = statistics.median(a + m for a, m in zip(times["augment"], times["model_step"]))
    top = peak(plan)
    achieved = train / seconds["model_step_median"] / 1e9
    achieved_with_augment = train / seconds["step_median"] / 1e9
    return {
        "command": "benchmarks/pretext_flops.py", **measured(), "threads": torch.get_num_threads(),
        "preset": preset, "overrides": extra, "backbone": config.model.backbone, "width": config.model.width,
        "batch_size": batch, "views_per_step": views, "view_shape": list(views_shape[1:]), "decoded_side": side,
        "plan": plan.describe(), "onednn_isa_cap": onednn_isa_cap(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flops": {**{f"{k}_step": v for k, v in flops.items()}, "forward_step": forward, "train_step": train,
                  "forward_per_view": forward / views, "train_per_view": train / views,
                  "train_per_image_two_views": 2 * train / views},
        "steps": steps, "warmup": warmup, "seconds": {**seconds, **{f"{k}_all": v for k, v in times.items()}},
        "images_per_s": batch / seconds["step_median"],
        "peak": top,
        "achieved": {"model_step_gflops": achieved, "model_step_share_of_peak": achieved / top["gflops"],
                     "with_augment_gflops": achieved_with_augment,
                     "with_augment_share_of_peak": achieved_with_augment / top["gflops"]},
    }


def table(record: dict) -> str:
    """A short plain-text table of one record."""
    flops, seconds, top, got = record["flops"], record["seconds"], record["peak"], record["achieved"]
    rows = [
        ("CPU", f"{record['cpu']} ({record['isa_flags']}), torch {record['torch']}"),
        ("execution", record["plan"]),
        ("preset / batch", f"{record['preset']} / {record['batch_size']} images = {record['views_per_step']} views "
                           f"of {'x'.join(map(str, record['view_shape']))}"),
        ("FLOPs per view", f"{flops['forward_per_view'] / 1e6:,.1f} M forward, "
                           f"{flops['train_per_view'] / 1e6:,.1f} M forward + backward"),
        ("FLOPs per step", f"{flops['train_step'] / 1e9:,.2f} G forward + backward "
                           f"(loss forward {flops['loss_forward_step'] / 1e6:,.2f} M of it)"),
        ("augment (2 views)", f"{seconds['augment_median'] * 1e3:,.1f} ms median"),
        ("model step", f"{seconds['model_step_median'] * 1e3:,.1f} ms median of {record['steps']}"),
        ("images/s", f"{record['images_per_s']:,.1f} (augment + model step)"),
        ("peak", f"{top['threads']} threads x {top['clock_ghz']:.2f} GHz x {top['flops_per_cycle_per_core']} "
                 f"FLOPs/cycle ({top['isa']}) = {top['gflops']:,.1f} GFLOP/s"),
        ("achieved", f"{got['model_step_gflops']:,.2f} GFLOP/s = {got['model_step_share_of_peak']:.1%} of peak "
                     f"(model step); {got['with_augment_share_of_peak']:.1%} with augmentation"),
    ]
    return "\n".join(f"{name:<18} {value}" for name, value in rows)


def save(record: dict, path: Path) -> None:
    """Replace this preset and batch size's entry in the JSON file at ``path``."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    variant = "".join(f"_{item}" for item in record["overrides"])
    results[f"{record['preset']}_b{record['batch_size']}{variant}"] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fashion-mnist", help="config preset (fashion-mnist, photos, ...)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. pretext.augment.crop_size=16 (recorded with the entry)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default: benchmarks/results/pretext_flops_<isa>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    record = measure(args.preset, args.batch_size, args.steps, args.warmup, args.overrides)
    path = args.output or RESULTS / f"pretext_flops_{record['peak']['isa']}.json"
    save(record, path)
    print(table(record))
    progress(f"wrote {path}")


if __name__ == "__main__":
    main()
