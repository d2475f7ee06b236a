"""Train the pretext, SCAN and self-label modules on tiny data with 1 or 2 CPU processes (gloo).

Run as ``python distributed_worker.py OUT DEVICES``. It goes through the real code path:
``distributed.launch`` (Lightning Fabric starts the second process as a copy of this
command), ``image_loader``/``batch_loader`` with their global-batch sampler, the stage
LightningModules and ``fit_stage`` (Lightning DDP), and the sharded embedding used by mining.
Rank 0 saves the per-step global losses, the parameters before and after every stage and
the gathered features to OUT for comparison with a one-process run.

Exactness: fp32, no augmentation (kind ``none``), one neighbour per anchor (so SCAN's
partner draw has no randomness), and a backbone without BatchNorm. BatchNorm in train mode
normalises with per-rank batch statistics, so a BN network would differ from the
one-process run unless SyncBatchNorm is used, which PyTorch supports on GPUs only.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from scanlearn.engine import distributed
from scanlearn.config import Config, with_values
from scanlearn.data.images import TensorImageSet
from scanlearn.models import ClusterHeads, ClusteringModel, ContrastiveModel
from scanlearn.engine.splits import DataSpec
from scanlearn.engine.loaders import augmenter, batch_loader, fetch_images, image_loader
from scanlearn.engine.embedding import embed_distributed
from scanlearn.engine.training import fit_stage
from scanlearn.stages.pretext import PretextModule
from scanlearn.clustering.heads import pair_dataset
from scanlearn.stages.scan import ScanModule
from scanlearn.stages.selflabel import SelfLabelModule

N_IMAGES, BATCH, EPOCHS, CLUSTERS = 40, 8, 2, 3
SPEC = DataSpec(num_classes=CLUSTERS, channels=1, image_size=8, mean=(0.5,), std=(0.25,))


class TinyNet(nn.Module):
    """Conv -> ReLU -> 2x2 pool -> flatten (16 features), no BatchNorm."""

    out_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_config(devices: int) -> Config:
    """fp32 on CPU, no augmentation, tiny batches; ``batch_size`` is the global batch."""
    values = {"runtime.accelerator": "cpu", "runtime.devices": str(devices), "runtime.precision": "32-true",
              "runtime.channels_last": False, "runtime.progress": False, "runtime.log_every_n_steps": 1,
              "pretext.optim.lr": 0.1, "scan.optim.lr": 1e-2, "scan.num_heads": 2, "scan.neighbor_includes_anchor": False,
              "selflabel.optim.lr": 1e-2, "selflabel.threshold": 0.8}
    for stage in ("pretext", "scan", "selflabel"):
        values |= {f"{stage}.epochs": EPOCHS, f"{stage}.batch_size": BATCH, f"{stage}.augment.kind": "none"}
    return with_values(Config(), values)


def make_images() -> TensorImageSet:
    """40 random 8x8 grey images."""
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (N_IMAGES, 1, 8, 8), dtype=np.uint8))
    return TensorImageSet(pixels, np.zeros(N_IMAGES, dtype=np.int64), None)


class StepLosses(L.Callback):
    """Records the logged (global) loss after every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(trainer.callback_metrics.get("loss_step", float("nan"))))


def train(config: Config, module: L.LightningModule, loader, name: str, root: Path) -> dict:
    """Fit ``module`` and return its step losses and final parameters."""
    recorder = StepLosses()
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    fit_stage(config, root / name, module, loader, EPOCHS, callbacks=[recorder])
    params = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return {"losses": recorder.losses, "params": params, "before": before}


def sharpened_clustering_model() -> ClusteringModel:
    """Clustering model with scaled-up head weights, so that some predictions are confident."""
    model = ClusteringModel(TinyNet(), TinyNet.out_dim, CLUSTERS, 1)
    with torch.no_grad():
        model.heads.weight.mul_(12.0)
    return model


def run(out: Path, devices: int) -> None:
    """Train every stage module and let rank 0 save the results."""
    config = make_config(devices)
    distributed.launch(config.runtime)
    images = make_images()
    root = Path(tempfile.mkdtemp(prefix="stages-", dir=out.parent))  # beside the output, in the test's tmp_path
    results = {}

    torch.manual_seed(0)
    pretext = PretextModule(ContrastiveModel(TinyNet(), TinyNet.out_dim, 8), config, SPEC)
    loader = image_loader(images, BATCH, shuffle=True, config=config, drop_last=True)
    results["pretext"] = train(config, pretext, loader, "pretext", root)

    torch.manual_seed(1)
    scan = ScanModule(TinyNet(), ClusterHeads(TinyNet.out_dim, CLUSTERS, 2), config, SPEC)
    neighbors = ((np.arange(N_IMAGES) + 7) % N_IMAGES)[:, None]
    image_rows = fetch_images(images)
    pairs = pair_dataset(lambda idx: image_rows(idx)[0], neighbors, include_anchor=False)
    loader = batch_loader(pairs, BATCH, shuffle=True, num_workers=0, seed=0, drop_last=True)
    results["scan"] = train(config, scan, loader, "scan", root)

    torch.manual_seed(2)
    selflabel = SelfLabelModule(sharpened_clustering_model(), config, SPEC)
    loader = image_loader(images, BATCH, shuffle=True, config=config, drop_last=True)
    results["selflabel"] = train(config, selflabel, loader, "selflabel", root)
    results["selflabel"]["confident"] = selflabel.confident

    config = with_values(config, {"selflabel.threshold": 0.9999})
    torch.manual_seed(2)
    unconfident = SelfLabelModule(sharpened_clustering_model(), config, SPEC)
    loader = image_loader(images, BATCH, shuffle=True, config=config, drop_last=True)
    results["unconfident"] = train(config, unconfident, loader, "unconfident", root)
    results["unconfident"]["confident"] = unconfident.confident

    torch.manual_seed(3)
    net = TinyNet().eval()
    results["features"] = embed_distributed(net, make_images(), config, augmenter(config.pretext.augment, SPEC), batch_size=6)
    results["world_size"] = distributed.world_size()
    if distributed.is_rank_zero():
        torch.save(results, out)


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]))
