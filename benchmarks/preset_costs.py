"""Estimate each paper preset's training compute from the model's FLOP count (an estimate, not a measurement).

For every preset the backbone, projection head and clustering heads are built exactly as the
preset configures them, and ``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of one
forward pass on one image at the preset's input size (convolutions and matrix products, 2 FLOPs
per multiply-add; batch norm, activations and augmentation are not counted). Training costs
3x a forward pass (forward + backward). Per stage, per epoch:

* pretext (SimCLR): pretext images x 2 views x 3 x (backbone + projection head); 0 when the
  weights are imported (MoCo v2 for ImageNet; its own 800-epoch pre-training is not counted);
* SCAN, whole network: train images x 2 (anchor + neighbour) x 3 x (backbone + heads);
  frozen backbone: the heads only, on backbone features computed once (a one-off forward pass);
* self-label: train images x (1 forward of the weak view + 3 x the strong view);
* one-off inference passes: mining (train + test), the pretext k-means/kNN baseline
  (train + test), SCAN head selection (train), and the scan/selflabel evaluations (test x 2).

GPU-hours = total FLOPs / assumed sustained throughput (default 100 TFLOP/s in bf16, about a
third of an A100's dense bf16 peak). Real runs are slower when data loading or small 32x32
convolutions keep the GPU from that throughput, so read the hours as a lower bound.

Usage: ``python benchmarks/preset_costs.py [--tflops 100] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from scanlearn.config import Config, load_preset
from scanlearn.models import ClusterHeads, ContrastiveHead, build_backbone
from scanlearn.engine.splits import data_spec

PRESETS = ("cifar10", "cifar20", "stl10", "imagenet50", "imagenet100", "imagenet200", "imagenet")
IMAGENET_PER_CLASS = 1_281_167 / 1000
VAL_PER_CLASS = 50
# (pretext images, train images, test images); ImageNet subsets at ImageNet's mean class size.
SPLIT_SIZES: dict[str, tuple[int, int, int]] = {
    "cifar10": (50_000, 50_000, 10_000),
    "cifar20": (50_000, 50_000, 10_000),
    "stl10": (105_000, 5_000, 8_000),
    **{f"imagenet{c}": (0, round(c * IMAGENET_PER_CLASS), c * VAL_PER_CLASS) for c in (50, 100, 200)},
    "imagenet": (0, 1_281_167, 50_000),
}


@dataclass
class PresetCost:
    """Estimated compute of one preset, in FLOPs unless the name says otherwise."""

    preset: str
    backbone: str
    input_size: int
    backbone_gflops: float
    pretext_per_epoch: float
    scan_per_epoch: float
    selflabel_per_epoch: float
    one_off: float
    total: float
    gpu_hours: float


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``x`` (FlopCounterMode: conv + matmul)."""
    module.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return counter.get_total_flops()


def preset_cost(name: str, tflops: float) -> PresetCost:
    """FLOP estimate of every stage of preset ``name`` at its published schedule."""
    config: Config = load_preset(name)
    spec = data_spec(config)
    size = spec.image_size
    backbone = build_backbone(config.model.backbone, width=config.model.width, in_channels=spec.channels)
    image = torch.zeros(1, spec.channels, size, size)
    features = torch.zeros(1, backbone.out_dim)
    f_backbone = forward_flops(backbone, image)
    f_proj = forward_flops(ContrastiveHead(backbone.out_dim, config.model.proj_dim), features)
    clusters = config.num_clusters or spec.num_classes
    f_heads = forward_flops(ClusterHeads(backbone.out_dim, clusters, config.scan.num_heads), features)
    f_head = forward_flops(ClusterHeads(backbone.out_dim, clusters, 1), features)
    n_pretext, n_train, n_test = SPLIT_SIZES[name]

    imported = config.pretext.method != "simclr" or config.pretext.epochs == 0
    pretext = 0.0 if imported else n_pretext * 2 * 3 * (f_backbone + f_proj)
    if config.scan.freeze_backbone:
        scan = n_train * 2 * 3 * f_heads
        scan_one_off = n_train * f_backbone
    else:
        scan = n_train * 2 * 3 * (f_backbone + f_heads)
        scan_one_off = n_train * (f_backbone + f_heads)
    selflabel = n_train * 4 * (f_backbone + f_head)
    mine_features = f_backbone + (f_proj if config.mine.features == "projection" else 0)
    one_off = (
        (n_train + n_test) * mine_features
        + (n_train + n_test) * f_backbone
        + scan_one_off
        + 2 * n_test * (f_backbone + f_head)
    )
    total = (
        pretext * config.pretext.epochs
        + scan * config.scan.epochs
        + selflabel * config.selflabel.epochs
        + one_off
    )
    return PresetCost(
        preset=name,
        backbone=config.model.backbone,
        input_size=size,
        backbone_gflops=f_backbone / 1e9,
        pretext_per_epoch=pretext,
        scan_per_epoch=scan,
        selflabel_per_epoch=selflabel,
        one_off=one_off,
        total=total,
        gpu_hours=total / (tflops * 1e12) / 3600,
    )


def markdown(costs: list[PresetCost], tflops: float) -> str:
    """The cost table as Markdown (PFLOP = 1e15 FLOPs)."""
    rows = [
        f"| preset | backbone @ input | GFLOP/img (fwd) | pretext PFLOP/epoch | SCAN PFLOP/epoch "
        f"| self-label PFLOP/epoch | one-off PFLOP | total PFLOP | GPU-hours @ {tflops:g} TFLOP/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        pretext = "imported" if c.pretext_per_epoch == 0 else f"{c.pretext_per_epoch / 1e15:.2f}"
        rows.append(
            f"| {c.preset} | {c.backbone} @ {c.input_size} | {c.backbone_gflops:.2f} | {pretext} "
            f"| {c.scan_per_epoch / 1e15:.4g} | {c.selflabel_per_epoch / 1e15:.2f} | {c.one_off / 1e15:.2f} "
            f"| {c.total / 1e15:,.0f} | {c.gpu_hours:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Print the Markdown table (and optionally save JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s (default 100, bf16)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    costs = [preset_cost(name, args.tflops) for name in PRESETS]
    print(markdown(costs, args.tflops))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in costs], indent=2))


if __name__ == "__main__":
    main()
