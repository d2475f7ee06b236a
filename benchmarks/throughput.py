"""Throughput of every stage on this machine, against its own matmul peak (issue: speed).

Prints a table and writes a JSON file (below). Each row is measured in this run:
matmul peak (fp32, bf16), the pretext training step (two views, NT-Xent, forward + backward +
SGD) in fp32 and bf16 autocast, each in NCHW and channels_last (through the library's layout
decision, so narrow layers stay NCHW; bf16 only on CPUs with native bf16, since emulated bf16 is
slower than fp32 and takes many minutes to time), the real input pipelines, a SCAN epoch with a trained vs a
frozen (cached-feature) backbone at the precision and layout the library picks on this CPU, and
exact top-20 mining of 70k x 128 (random normal and 10-cluster features, through search_neighbors).
Results go to benchmarks/results/throughput_<cpu kind>.json (avx512_bf16 or avx2), with the CPU
model and ISA flags; `ONEDNN_MAX_CPU_ISA=AVX2` makes an AVX-512 host measure the AVX2 kind.

    .venv/bin/python benchmarks/throughput.py [--quick] [--mining]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from scanlearn.config import RuntimeConfig, resolve
from scanlearn.engine.execution import cpu_has_native_bf16, cpu_identity, plan_execution
from scanlearn.losses import nt_xent_loss, scan_loss
from scanlearn.mining import drop_self, knn_search, search_neighbors
from scanlearn.models import ClusterHeads, ContrastiveModel, build_backbone
from scanlearn.engine.loaders import augmenter, batch_loader, image_loader
from scanlearn.engine.run import Run
from scanlearn.engine.splits import data_spec
from scanlearn.clustering.heads import pair_dataset

RESULTS = Path(__file__).parent / "results"
MODES = {"fp32": ("32-true", False), "fp32+channels_last": ("32-true", True),
         "bf16": ("bf16-mixed", False), "bf16+channels_last": ("bf16-mixed", True)}


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of a large square torch.mm in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = timed(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def pretext_step(model: ContrastiveModel, batch: int, channels: int, size: int, mode: str, repeats: int) -> dict:
    """Images/s and GFLOP/s of one SimCLR training step (both views in one forward)."""
    precision, channels_last = MODES[mode]
    plan = plan_execution(RuntimeConfig(accelerator="cpu", precision=precision, channels_last=channels_last), model)
    model = plan.apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    views = torch.randn(2 * batch, channels, size, size)

    def step():
        with plan.autocast():
            z1, z2 = model(views).chunk(2)
            loss = nt_xent_loss(z1, z2, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = timed(step, repeats)
    return {"images_per_s": 2 * batch / seconds, "gflops": flops / seconds / 1e9, "step_s": seconds}


def input_pipeline(config, augment_cfg, views: int, seconds: float = 8.0) -> float:
    """Augmented images/s delivered by a stage's real DataLoader + batch augmentation."""
    images = Run(config, Path("unused")).split("train")
    augment = augmenter(augment_cfg, data_spec(config))
    delivered, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch, _, _ in image_loader(images, 256, shuffle=True, config=config, drop_last=True):
            for _ in range(views):
                augment(batch)
            delivered += views * len(batch)
            if time.perf_counter() - start > seconds:
                break
    return delivered / (time.perf_counter() - start)


def scan_epoch(config, frozen: bool, steps: int) -> float:
    """Seconds per SCAN epoch (60k images), trained backbone vs heads on cached features."""
    spec = data_spec(config)
    backbone = build_backbone(config.model.backbone, width=config.model.width, in_channels=spec.channels)
    heads = ClusterHeads(backbone.out_dim, 10, config.scan.num_heads)
    n = 60000
    neighbors = np.random.default_rng(0).integers(0, n, (n, 20))
    if frozen:
        features = torch.randn(n, backbone.out_dim)
        rows = lambda idx: features[torch.from_numpy(idx)]  # noqa: E731
        params = list(heads.parameters())
    else:
        images = torch.randint(0, 255, (n, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8)
        rows = lambda idx: images[torch.from_numpy(idx)]  # noqa: E731
        params = list(backbone.parameters()) + list(heads.parameters())
    plan = plan_execution(RuntimeConfig(accelerator="cpu"), backbone)
    backbone = plan.apply(backbone)
    augment = augmenter(config.scan.augment, spec)
    optimizer = torch.optim.Adam(params, lr=1e-4)
    loader = batch_loader(pair_dataset(rows, neighbors, True), config.scan.batch_size, True, 0, drop_last=True)
    batches_per_epoch = n // config.scan.batch_size
    start, done = time.perf_counter(), 0
    for anchors, partners, _ in loader:
        if frozen:
            x = torch.cat([anchors, partners])
        else:
            x = torch.cat([augment(anchors), augment(partners)])
        with plan.autocast():
            feats = x if frozen else backbone(x)
            a, p = heads(feats).chunk(2, dim=1)
            loss = sum(scan_loss(a[h], p[h]).total for h in range(a.shape[0]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if done >= steps:
            break
    return (time.perf_counter() - start) / done * batches_per_epoch


def mining_features(kind: str, n: int = 70000, dim: int = 128) -> np.ndarray:
    """n x dim float32 features: ``normal`` (i.i.d. gaussian) or ``clustered`` (10 gaussian clusters, noise 0.5)."""
    rng = np.random.default_rng(0)
    if kind == "normal":
        return rng.normal(size=(n, dim)).astype(np.float32)
    centres = rng.normal(size=(10, dim))
    return (centres[rng.integers(0, 10, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def mining_time(kind: str = "clustered", n: int = 70000, dim: int = 128, k: int = 20) -> dict:
    """Seconds for exact cosine top-k through the production path (search_neighbors, index flat), and its route:
    bf16 = 1 when the bf16 search with certificate ran, fallback_rows = rows it handed to faiss IndexFlatIP."""
    features = mining_features(kind, n, dim)
    start = time.perf_counter()
    mined = search_neighbors(features, k, index="flat")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bf16": float(mined.method == "bf16"),
            "fallback_rows": float(mined.counts.get("fallback_rows", 0))}


def faiss_flat_time(kind: str = "clustered", n: int = 70000, dim: int = 128, k: int = 20) -> float:
    """Seconds for the same search with faiss IndexFlatIP alone (the route before the bf16 search), for reference."""
    features = mining_features(kind, n, dim)
    start = time.perf_counter()
    drop_self(knn_search(features, features, k + 1)[1])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    parser.add_argument("--mining", action="store_true", help="only time mining (printed, results file untouched)")
    args = parser.parse_args()
    if args.mining:
        for kind in ("normal", "clustered"):
            print(f"mining_70k_x128_top20_{kind}", mining_time(kind), "faiss flat:", faiss_flat_time(kind), flush=True)
        return
    repeats = 2 if args.quick else 4
    torch.manual_seed(0)
    config = resolve("fashion-mnist", None, ["runtime.progress=false"])
    rows: dict[str, dict] = {}
    native = cpu_has_native_bf16()
    modes = [m for m in MODES if native or MODES[m][0] == "32-true"]  # emulated bf16 is slower and takes ages
    rows["matmul_fp32"] = {"gflops": matmul_peak(torch.float32)}
    if native:
        rows["matmul_bf16"] = {"gflops": matmul_peak(torch.bfloat16)}
    models = {
        "resnet18_32x32x3_b128x2views": (ContrastiveModel(build_backbone("resnet18-cifar", 64, 3), 512), 3, 32, 128),
        "fashion_preset_28x28x1_b256x2views": (
            ContrastiveModel(build_backbone(config.model.backbone, config.model.width, 1), config.model.width * 8),
            1, 28, config.pretext.batch_size,
        ),
    }
    for name, (model, channels, size, batch) in models.items():
        for mode in modes:
            rows[f"pretext_{name}_{mode}"] = pretext_step(model, batch, channels, size, mode, repeats)
            print(name, mode, rows[f"pretext_{name}_{mode}"], flush=True)
    rows["input_pretext"] = {"images_per_s": input_pipeline(config, config.pretext.augment, views=2)}
    rows["input_selflabel"] = {"images_per_s": input_pipeline(config, config.selflabel.augment, views=1)}
    rows["scan_epoch_trained_backbone"] = {"seconds": scan_epoch(config, frozen=False, steps=10 if args.quick else 20)}
    rows["scan_epoch_frozen_cached"] = {"seconds": scan_epoch(config, frozen=True, steps=200)}
    for kind in ("normal", "clustered"):
        rows[f"mining_70k_x128_top20_{kind}"] = mining_time(kind)
    report(rows, args, modes)


def report(rows: dict, args, modes: list[str]) -> None:
    """Print the table with the derived ratios and save JSON."""
    r18 = "pretext_resnet18_32x32x3_b128x2views"
    fm = "pretext_fashion_preset_28x28x1_b256x2views"
    derived = {
        f"{mode}_speedup_{name}": rows[f"{row}_{mode}"]["images_per_s"] / rows[f"{row}_fp32"]["images_per_s"]
        for mode in modes if mode != "fp32" for name, row in (("resnet18", r18), ("fashion", fm))
    }
    best = max(modes, key=lambda m: rows[f"{r18}_{m}"]["gflops"])
    peak = rows["matmul_bf16" if best.startswith("bf16") else "matmul_fp32"]["gflops"]
    derived[f"resnet18_fraction_of_matmul_peak_{best}"] = rows[f"{r18}_{best}"]["gflops"] / peak
    derived["input_over_step_pretext"] = rows["input_pretext"]["images_per_s"] / max(rows[f"{fm}_{m}"]["images_per_s"] for m in modes)
    derived["frozen_speedup_scan_epoch"] = rows["scan_epoch_trained_backbone"]["seconds"] / rows["scan_epoch_frozen_cached"]["seconds"]
    meta = {"date": str(date.today()), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            **cpu_identity(), "torch": torch.__version__, "quick": args.quick}
    print(f"{meta['cpu']} ({meta['isa_flags']}); {meta['decision']}; {meta['cores']} cores, {meta['date']}")
    for key, value in rows.items():
        print(f"{key:<55} " + "  ".join(f"{k}={v:,.2f}" for k, v in value.items()))
    for key, value in derived.items():
        print(f"{key:<55} {value:.2f}")
    path = RESULTS / f"throughput_{'avx512_bf16' if cpu_has_native_bf16() else 'avx2'}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows, "derived": derived}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
