"""Exact resume after a crash: deterministic batches, per-batch seeds, rolling atomic checkpoints.

Every random choice during training is a pure function of (seed, epoch, batch position):

* the batch order is a permutation seeded by (seed, epoch), and a resumed epoch skips the
  batches already trained on;
* randomness drawn while fetching a batch (e.g. SCAN's neighbour choice) uses a seed carried
  by the batch key, without touching the global generator;
* the global torch generator (augmentations) is reseeded right before every batch.

So a run killed at any moment and resumed from its last checkpoint replays exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Sampler

from ..errors import CheckpointError, ScanlearnWarning, TrainingError, UnsafeFileError
from .interrupt import Interrupted, raise_if_stop_requested, stop_requested, training_safe_points
from ..runs.fsutil import atomic_write_bytes, load_verified, remove_stale_temporaries, with_digest

LAST = "last.ckpt"
PREVIOUS = "previous.ckpt"
DATA_KEY = "scanlearn_data_position"
MODULE_KEY = "scanlearn_module_state"
FETCH_STREAM, AUGMENT_STREAM = 1, 2


def step_seed(seed: int, *parts: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer ``parts`` (independent for different parts)."""
    state = np.random.SeedSequence([seed, *parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def process_rank() -> int:
    """Global rank of this process (0 without a process group)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@dataclass(frozen=True)
class BatchKey:
    """The indices of one batch and the seed for any randomness drawn while fetching it."""

    indices: Any
    seed: int


class ResumableSampler(Sampler):
    """Wraps a per-epoch deterministic batch sampler: seeds each batch's fetch, resumes mid-epoch.

    ``inner`` must yield the same batches for the same epoch (e.g. a permutation seeded by
    seed + epoch). After ``load_state_dict`` the next epoch's iteration skips the batches
    already trained on.
    """

    def __init__(self, inner: Sampler, seed: int) -> None:
        self.inner = inner
        self.seed = seed
        self.epoch = 0
        self.done = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch."""
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[BatchKey]:
        epoch, start = self.epoch, self._skip
        self._skip = 0
        rank = process_rank()
        for b, indices in enumerate(self.inner):
            if b >= start:
                yield BatchKey(indices, step_seed(self.seed, FETCH_STREAM, epoch, b, rank))

    def mark(self, epoch: int, done: int) -> None:
        """Record that ``done`` batches of ``epoch`` have been trained on (stored in checkpoints)."""
        self.epoch, self.done = epoch, done

    def state_dict(self) -> dict[str, int]:
        """Position to resume from: the epoch and how many of its batches are done."""
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration starts at batch ``done`` of ``epoch``."""
        self.set_epoch(int(state["epoch"]))
        self.done = self._skip = int(state["done"])


def data_sampler(trainer: L.Trainer) -> ResumableSampler | None:
    """The resumable sampler of the trainer's training loader, if it has one."""
    loader = trainer.train_dataloader
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, ResumableSampler) else None


class ResumableModule(L.LightningModule):
    """Base of the stage modules: reseeds the global RNG per batch; checkpoints ``persistent`` attributes.

    Subclasses set ``self.config``; attributes named in ``persistent`` (plain numbers such as
    running counters) are saved in checkpoints and restored on resume.
    """

    persistent: tuple[str, ...] = ()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Reseed the global generator for the batch's augmentations from its position in the epoch, which
        the resumable sampler knows (batches trained so far: ``RollingCheckpoint`` marks each one)."""
        sampler = data_sampler(self.trainer) if self.trainer.training else None
        if sampler is not None:
            seed = step_seed(self.config.runtime.seed, AUGMENT_STREAM, self.trainer.current_epoch, sampler.done,
                             self.global_rank)
            torch.manual_seed(seed)
        return batch

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MODULE_KEY] = {name: getattr(self, name) for name in self.persistent}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, value in checkpoint.get(MODULE_KEY, {}).items():
            setattr(self, name, value)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: writes with digest + temporary file + rename (``last`` rolls to
    ``previous``); reads without running code and with the digest checked, whatever Lightning asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        backup = path.with_name(PREVIOUS) if path.name == LAST else None
        atomic_write_bytes(path, lambda f: torch.save(with_digest(checkpoint), f), backup=backup)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """The checkpoint on CPU, loaded without running code and digest-checked (Lightning's arguments ignored)."""
        return load_verified(path)


class RollingCheckpoint(Checkpoint):
    """Saves ``checkpoints/last.ckpt`` after every epoch and every ``every_n_steps`` optimizer steps.

    Before each save it records the data position and refuses to save non-finite weights, so
    the checkpoint on disk is always a good one to resume from. After a stop signal it saves at
    the next batch boundary and raises ``Interrupted`` there.
    """

    def __init__(self, directory: Path, every_n_steps: int = 0) -> None:
        self.path = Path(directory) / LAST
        self.every_n_steps = every_n_steps
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        sampler = data_sampler(trainer)
        if sampler is not None:
            sampler.mark(trainer.current_epoch, batch_idx + 1)
        step = trainer.global_step
        end_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if self.every_n_steps and not end_of_epoch and step % self.every_n_steps == 0 and step != self._last_step:
            self._save(trainer, pl_module)
        if stop_requested() is not None and not end_of_epoch:
            if step != self._last_step:
                self._save(trainer, pl_module)
            raise_if_stop_requested()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = data_sampler(trainer)
        if sampler is not None:
            sampler.mark(trainer.current_epoch + 1, 0)
        self._save(trainer, pl_module)
        raise_if_stop_requested()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        sampler = data_sampler(trainer)
        if sampler is not None:
            checkpoint[DATA_KEY] = sampler.state_dict()

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = next((name for name, p in pl_module.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            stage = self.path.parent.parent.name
            raise TrainingError(
                f"{stage} weights became NaN/inf ({bad}) at epoch {trainer.current_epoch}; the last good checkpoint "
                f"{self.path} is kept — lower the learning rate (--set {stage}.optim.lr=...) and add --restart"
            )
        trainer.save_checkpoint(self.path)
        self._last_step = trainer.global_step


def preserve_logs(log_dir: Path) -> None:
    """Keep an interrupted session's ``metrics.csv`` (Lightning would delete it) as ``metrics.N.csv``."""
    current = Path(log_dir) / "metrics.csv"
    if current.is_file() and process_rank() == 0:
        number = 1 + len(list(current.parent.glob("metrics.*.csv")))
        current.replace(current.with_name(f"metrics.{number}.csv"))


def checkpoint_candidates(directory: Path) -> list[Path]:
    """Checkpoints to resume from, newest first."""
    return [p for p in (directory / LAST, directory / PREVIOUS) if p.is_file()]


def find_resume_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads and matches its digest, with its contents.

    A damaged checkpoint is renamed ``*.corrupt`` and the user is told which one is used
    instead; when none is usable the stage starts over.
    """
    remove_stale_temporaries(directory)
    for path in checkpoint_candidates(directory):
        try:
            state = load_verified(path)
        except UnsafeFileError as exc:
            raise UnsafeFileError(f"{exc}; delete it (or rerun with --restart) to train the stage again") from None
        except CheckpointError as exc:
            if process_rank() == 0:
                path.replace(path.with_suffix(".corrupt"))
            fallback = [p.name for p in checkpoint_candidates(directory) if p != path]
            then = f"resuming from {fallback[0]} instead" if fallback else "no good checkpoint left, starting the stage over"
            warnings.warn(f"{exc}; moved it to {path.with_suffix('.corrupt').name}, {then}", ScanlearnWarning, stacklevel=2)
            continue
        if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
            raise CheckpointError(f"{path} is not a training checkpoint of this stage; rerun with --restart")
        return path, state
    return None


def fit_resumable(trainer: L.Trainer, module: L.LightningModule, loader: DataLoader, directory: Path) -> None:
    """``trainer.fit`` resuming from the last good checkpoint in ``directory``, at the exact batch.

    A stop signal ends it at the next batch boundary with ``Interrupted``, also when Lightning's
    own SIGTERM handler gets there first (it raises a bare ``SystemExit`` that would exit 0).
    """
    found = find_resume_checkpoint(directory)
    ckpt_path = None
    if found is not None:
        ckpt_path, state = found
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, ResumableSampler) and DATA_KEY in state:
            sampler.load_state_dict(state[DATA_KEY])
    with warnings.catch_warnings():
        # The sampler resumes mid-epoch exactly (module docstring), and whole-batch in-memory loaders need no
        # worker processes: two of Lightning's hints that do not apply here, silenced for this fit only.
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended")
        warnings.filterwarnings("ignore", message=".*does not have many workers")
        # Lightning 2.6.6 calls a torch pytree check that torch 2.14 deprecates: not ours, nothing to act on.
        # A resumed stage's logs folder holds the earlier session's metrics.N.csv (preserve_logs), which Lightning
        # takes for files it would delete; and a step skipped for lack of confident samples (self-label) still
        # advances the schedule, as intended.
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        try:
            with training_safe_points():
                trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            raise Interrupted(signal.SIGTERM) from None
        except RuntimeError as exc:
            if ckpt_path is not None and "state_dict" in str(exc):
                raise CheckpointError(
                    f"checkpoint {ckpt_path} does not fit this model ({str(exc).splitlines()[0]}); "
                    f"rerun with --restart or use a new --run-dir"
                ) from None
            raise
