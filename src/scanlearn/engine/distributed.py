"""Data-parallel helpers on top of Lightning's DDP: process launch, ranks, barriers, gathers.

Every process of a run (``--devices N --num-nodes M``, torchrun or SLURM) executes the same
command. ``launch`` creates the process group once, at the start of a command, through
Lightning Fabric (which spawns the other local processes itself unless torchrun or SLURM
already did); every later ``Trainer`` joins that group instead of creating one. Rank 0 alone
writes artefacts; the other ranks wait for it at ``barrier``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from ..config import RuntimeConfig, parse_devices
from ..errors import ConfigError

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
GATHER_CHUNK_BYTES = 64 * 2**20


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes of the run (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_rank_zero() -> bool:
    """Whether this process writes artefacts; before the group exists, judged from the launcher's variables."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def barrier() -> None:
    """Wait until every process gets here (no-op on one process)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def rank_zero_first() -> Iterator[None]:
    """Run the body on rank 0 first (e.g. a download), then on the other ranks."""
    if not is_rank_zero():
        barrier()
    yield
    if is_rank_zero():
        barrier()


def wants_processes(runtime: RuntimeConfig) -> bool:
    """Whether the runtime asks for more than one process (several devices or nodes)."""
    if runtime.num_nodes > 1:
        return True
    devices = str(runtime.devices)
    if devices in ("auto", "-1"):
        return _auto_device_count(runtime.accelerator) > 1
    if "," in devices:
        return len([d for d in devices.split(",") if d.strip()]) > 1
    return int(devices) > 1


def _auto_device_count(accelerator: str) -> int:
    """Devices Lightning's ``devices='auto'`` would use for ``accelerator``."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


def launch(runtime: RuntimeConfig) -> None:
    """Create the process group for a multi-process runtime (spawning local ranks if needed).

    A no-op for one process or when the group exists. The timeout of the group bounds how
    long the other ranks wait while rank 0 works alone (evaluation, index search).
    """
    if not wants_processes(runtime) or (dist.is_available() and dist.is_initialized()):
        return
    if "spawn" in runtime.strategy or "fork" in runtime.strategy or "notebook" in runtime.strategy:
        raise ConfigError(
            f"runtime.strategy={runtime.strategy} is not supported by the command line; use ddp "
            "(processes start as copies of the command, as under torchrun and SLURM)"
        )
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    strategy = DDPStrategy(start_method="popen", timeout=timedelta(minutes=runtime.dist_timeout_minutes))
    devices = parse_devices(runtime.devices)
    fabric = Fabric(accelerator=runtime.accelerator, devices=devices, num_nodes=runtime.num_nodes, strategy=strategy)
    fabric.launch()


def shard_bounds(n: int, ranks: int | None = None) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` rows of each rank for ``n`` rows (sizes differ by at most one)."""
    ranks = ranks or world_size()
    edges = np.linspace(0, n, ranks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _comm_device() -> torch.device:
    """Device collectives run on: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(local: np.ndarray, n: int, to_all: bool = True) -> np.ndarray | None:
    """Concatenate every rank's contiguous shard (``shard_bounds(n)``) of rows, in rank order.

    With ``to_all`` every rank gets the (n, ...) result, otherwise rank 0 only (the others get
    None, and hold no copy). Rows travel in chunks of about 64 MB so that NCCL never holds the
    whole matrix on a GPU.
    """
    if not is_distributed():
        return local
    bounds = shard_bounds(n)
    rows = max(b - a for a, b in bounds)
    row_bytes = max(1, int(np.prod(local.shape[1:])) * local.itemsize)
    step = max(1, GATHER_CHUNK_BYTES // row_bytes)
    device = _comm_device()
    keep = to_all or rank() == 0
    padded = np.zeros((rows, *local.shape[1:]), dtype=local.dtype)
    padded[: len(local)] = local
    parts: list[list[np.ndarray]] = [[] for _ in bounds]
    for start in range(0, rows, step):
        chunk = torch.from_numpy(padded[start: start + step]).to(device)
        received = [torch.empty_like(chunk) for _ in bounds] if keep else None
        if to_all:
            dist.all_gather(received, chunk)
        else:
            dist.gather(chunk, received, dst=0)
        for r, tensor in enumerate(received or []):
            parts[r].append(tensor.cpu().numpy())
    if not keep:
        return None
    return np.concatenate([np.concatenate(p)[: b - a] for p, (a, b) in zip(parts, bounds)])


def broadcast_object(value: object) -> object:
    """Rank 0's ``value`` on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``tensor`` over all ranks (a copy; identity on one process)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone().to(_comm_device())
    dist.all_reduce(out)
    return out.to(tensor.device)


def max_over_ranks(value: float) -> float:
    """Largest ``value`` over all ranks."""
    if not is_distributed():
        return value
    out = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return float(out.item())


def gather_with_grad(all_gather: Callable[..., torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, D) -> (W*N, D) concatenation over ranks in rank order, gradients flowing back to each rank."""
    return lambda t: all_gather(t, sync_grads=True).flatten(0, 1)
