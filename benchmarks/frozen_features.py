"""Time per epoch of SCAN heads on cached frozen-backbone features vs on images.

Both variants train the same heads with the same SCAN module, data and neighbours; the image
variant recomputes the (frozen, eval-mode) backbone on every anchor and neighbour of every
step, the cached variant reads features embedded once (``scanlearn.engine.features.FeatureCache``,
whose one-time cost is reported too). Images are a generated folder of PIL-drawn shapes
decoded at the backbone's input size. Weights default to ``none`` (seeded random init):
timing does not depend on the weight values, and nothing is downloaded. Writes a Markdown
table with the command, date and machine.

    .venv/bin/python benchmarks/frozen_features.py [--backbone timm:vit_small_patch14_dinov2.lvd142m]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

from scanlearn.config import Config, load_preset, with_values
from scanlearn.engine.features import FeatureCache, rows
from scanlearn.mining import mine_neighbors
from scanlearn.models import ClusterHeads
from scanlearn.engine.loaders import BatchFetchDataset, batch_loader, fetch_images
from scanlearn.engine.run import Run
from scanlearn.engine.splits import data_spec
from scanlearn.clustering.heads import pair_dataset
from scanlearn.stages.scan import ScanModule

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "frozen_features.md"


def write_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 96x96 PNGs of circles, squares and triangles in random colours and places."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        shape = ("circle", "square", "triangle")[i % 3]
        (root / shape).mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(0, 90, 3)))
        pen = ImageDraw.Draw(image)
        x, y, r = (int(v) for v in (*rng.integers(28, 68, 2), rng.integers(12, 26)))
        colour = tuple(int(v) for v in rng.integers(120, 256, 3))
        box = (x - r, y - r, x + r, y + r)
        if shape == "circle":
            pen.ellipse(box, fill=colour)
        elif shape == "square":
            pen.rectangle(box, fill=colour)
        else:
            pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        image.save(root / shape / f"{i}.png")
    return root


def make_config(args: argparse.Namespace, root: Path) -> Config:
    """The dinov2-vits14 preset pointed at ``root`` with the benchmark's backbone and sizes."""
    return with_values(load_preset("dinov2-vits14"), {
        "data.root": str(root), "data.num_workers": 0, "model.backbone": args.backbone, "model.weights": args.weights,
        "model.input_size": args.input_size, "num_clusters": 3, "scan.num_heads": args.heads,
        "scan.batch_size": args.batch_size, "runtime.progress": False, "runtime.precision": "32-true",
    })


def time_epochs(
    module: L.LightningModule, dataset: BatchFetchDataset, config: Config, epochs: int, warmup: bool
) -> tuple[float, float]:
    """(wall, CPU) seconds per epoch of ``epochs`` SCAN epochs (after an untimed warm-up epoch if ``warmup``)."""
    loader = batch_loader(dataset, config.scan.batch_size, shuffle=True, num_workers=0, seed=0, drop_last=True)
    timings = []
    for budget in ((1, epochs) if warmup else (epochs,)):
        trainer = L.Trainer(
            accelerator="cpu", devices=1, max_epochs=budget, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )
        start, cpu = time.perf_counter(), time.process_time()
        trainer.fit(module, loader)
        timings.append(((time.perf_counter() - start) / budget, (time.process_time() - cpu) / budget))
    return timings[-1]


def run(args: argparse.Namespace) -> dict[str, tuple[float, float] | int]:
    """Embed once, then time SCAN epochs on cached features and on images."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_folder(Path(tmp) / "images", args.images)
        config = make_config(args, root)
        spec = data_spec(config)
        images = Run(config, Path(tmp) / "run").split("train")
        cache = FeatureCache(Run(config, Path(tmp) / "run"))
        start, cpu = time.perf_counter(), time.process_time()
        features = cache.clean(images)
        embed_seconds = (time.perf_counter() - start, time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        FeatureCache(Run(config, Path(tmp) / "run")).clean(images)
        reuse_seconds = (time.perf_counter() - start, time.process_time() - cpu)
        neighbors = mine_neighbors(np.asarray(features), args.k)
        heads = ClusterHeads(features.shape[1], 3, args.heads)
        cached = pair_dataset(lambda idx: rows(features, idx), neighbors, True)
        cached_epoch = time_epochs(ScanModule(None, heads, config, spec), cached, config, args.cached_epochs, warmup=True)
        backbone = cache.backbone().requires_grad_(False)
        config.scan.augment.kind = "none"
        image_rows = fetch_images(images)
        on_images = pair_dataset(lambda idx: image_rows(idx)[0], neighbors, True)
        module = FrozenImageScan(backbone, ClusterHeads(features.shape[1], 3, args.heads), config, spec)
        image_epoch = time_epochs(module, on_images, config, args.image_epochs, warmup=False)
    return {"embed": embed_seconds, "reuse": reuse_seconds, "cached": cached_epoch, "images": image_epoch,
            "dim": int(features.shape[1])}


class FrozenImageScan(ScanModule):
    """SCAN on images with the backbone kept frozen in eval mode (recomputed every step)."""

    def on_train_epoch_start(self) -> None:
        self.backbone.eval()

    def configure_optimizers(self):
        from scanlearn.engine.training import optimizer_with_schedule

        return optimizer_with_schedule(self, self.heads.parameters(), self.config.scan.optim)


def machine() -> str:
    """CPU model, core count and load, for the record."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), load average {load}"


def seconds(value: tuple[float, float]) -> str:
    """``wall / CPU`` in s or ms."""
    unit, scale = ("ms", 1000) if value[0] < 1 else ("s", 1)
    return f"{value[0] * scale:.1f} {unit} / {value[1] * scale:.1f} {unit}"


def report(args: argparse.Namespace, result: dict) -> str:
    """Markdown section with the command, date, machine and the figures."""
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    speedup = result["images"][1] / result["cached"][1]
    return (
        f"## SCAN heads: cached features vs images ({args.backbone})\n\n"
        f"- command: `{command}`\n- date: {date.today().isoformat()}\n- machine: {machine()}\n"
        f"- data: {args.images} generated images at {args.input_size} px, {result['dim']}-d features, "
        f"{args.heads} heads, batch {args.batch_size} anchors + {args.batch_size} neighbours, fp32\n\n"
        f"| variant | per SCAN epoch, wall / CPU time |\n|---|---|\n"
        f"| on images (frozen backbone recomputed every step) | {seconds(result['images'])} |\n"
        f"| on cached features | {seconds(result['cached'])} ({speedup:.0f}x less CPU) |\n"
        f"| one-time embedding into the cache (once per run) | {seconds(result['embed'])} |\n"
        f"| later stages reusing the cache (hash + memory map) | {seconds(result['reuse'])} |\n\n"
        f"CPU time is the process's (both threads); wall time depends on the machine's load.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="timm:vit_small_patch14_dinov2.lvd142m")
    parser.add_argument("--weights", default="none", help="weights file, or none for a seeded random init")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=10)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--cached-epochs", type=int, default=20)
    parser.add_argument("--image-epochs", type=int, default=1)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    result = run(args)
    text = report(args, result)
    print(text)
    with open(args.output, "a") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
