"""Guards that turn silent training failures into clear errors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, TrainingError


def check_finite(loss: torch.Tensor, stage: str) -> torch.Tensor:
    """Stop training with a clear message when the loss is NaN or infinite."""
    if not torch.isfinite(loss.detach()).all():
        raise TrainingError(
            f"{stage} loss became {loss.item()}; the last good checkpoint is kept — rerun the same command "
            f"to retry from it, or lower the learning rate (--set {stage}.optim.lr=...) and add --restart"
        )
    return loss


def load_state_checked(model: nn.Module, state_dict: dict, source: str | Path) -> None:
    """Load weights, refusing a checkpoint whose keys or shapes belong to another model."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        detail = (missing[:2] and f"missing {missing[:2]}") or (unexpected[:2] and f"unexpected {unexpected[:2]}") or f"shape mismatch at {wrong[:2]}"
        raise CheckpointError(
            f"checkpoint {source} does not fit this model ({detail}); it was made with another "
            f"backbone or width — use the same config or a new --run-dir"
        )
    model.load_state_dict(state_dict)
