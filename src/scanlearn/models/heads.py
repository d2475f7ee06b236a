"""Heads: the SimCLR projection MLP and SCAN's linear clustering heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContrastiveHead(nn.Sequential):
    """Projection MLP d -> d -> ``out_dim`` with ReLU between (SimCLR)."""

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


class BlockWhitening(nn.Module):
    """A fixed map of feature rows: each block centred, projected, L2-normalised, the blocks side by side (the mined
    space's whitening, held as buffers so that heads saved with it apply to raw features of new images).

    ``in_widths`` and ``out_widths`` are the blocks' widths before and after; ``projection`` is block-diagonal.
    """

    def __init__(self, in_widths: list[int], out_widths: list[int]) -> None:
        super().__init__()
        self.in_widths, self.out_widths = list(in_widths), list(out_widths)
        self.register_buffer("offset", torch.zeros(sum(in_widths)))
        self.register_buffer("projection", torch.zeros(sum(in_widths), sum(out_widths)))

    @classmethod
    def of_blocks(cls, means: list, projections: list) -> BlockWhitening:
        """The map of blocks with these means (width,) and projections (width, kept); arrays or tensors."""
        means = [torch.as_tensor(mean, dtype=torch.float32) for mean in means]
        projections = [torch.as_tensor(projection, dtype=torch.float32) for projection in projections]
        whitening = cls([len(mean) for mean in means], [projection.shape[1] for projection in projections])
        whitening.offset.copy_(torch.cat(means))
        whitening.projection.copy_(torch.block_diag(*projections))
        return whitening

    @property
    def out_dim(self) -> int:
        return sum(self.out_widths)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mapped = (features.float() - self.offset) @ self.projection
        return torch.cat([F.normalize(block, dim=-1) for block in mapped.split(self.out_widths, dim=-1)], dim=-1)


class ClusterHeads(nn.Module):
    """``num_heads`` independent linear heads d -> C, held as one (H, C, d) weight so that all heads train in one
    matrix product (B, d) x (d, H*C); forward returns logits (H, B, C).

    With ``normalize_input`` the heads see L2-normalised features, so one learning rate suits any
    backbone's feature scale (a from-scratch ResNet's pooled features have norms in the tens); with ``input_map``
    they see the features through that fixed map first (heads on the mined space: its whitening).
    Each head starts as ``nn.Linear`` would; models saved with one ``heads.<i>`` entry per head still load.
    """

    def __init__(self, in_dim: int, num_clusters: int, num_heads: int = 1, normalize_input: bool = False,
                 input_map: BlockWhitening | None = None) -> None:
        super().__init__()
        if num_clusters < 2:
            raise ValueError(f"need at least 2 clusters, got {num_clusters}")
        self.normalize_input = normalize_input
        self.input_map = input_map
        if input_map is not None and sum(input_map.in_widths) != in_dim:
            raise ValueError(f"the input map reads {sum(input_map.in_widths)} features, the heads {in_dim}")
        mapped = input_map.out_dim if input_map is not None else in_dim
        linear = [nn.Linear(mapped, num_clusters) for _ in range(num_heads)]
        self.weight = nn.Parameter(torch.stack([head.weight.detach() for head in linear]))
        self.bias = nn.Parameter(torch.stack([head.bias.detach() for head in linear]))

    @property
    def in_dim(self) -> int:
        """The width of the features the heads read (before ``input_map``)."""
        return sum(self.input_map.in_widths) if self.input_map is not None else self.weight.shape[2]

    @property
    def num_clusters(self) -> int:
        return self.weight.shape[1]

    def __len__(self) -> int:
        return self.weight.shape[0]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.input_map is not None:
            features = self.input_map(features)
        if self.normalize_input:
            features = F.normalize(features, dim=-1)
        heads, clusters, width = self.weight.shape
        logits = torch.addmm(self.bias.reshape(-1).to(features.dtype), features,
                             self.weight.reshape(heads * clusters, width).t().to(features.dtype))
        return logits.view(len(features), heads, clusters).transpose(0, 1)

    def keep(self, indices: list[int]) -> None:
        """Keep only the heads ``indices``, in that order (after ranking them by loss)."""
        self.weight = nn.Parameter(self.weight.detach()[indices].clone())
        self.bias = nn.Parameter(self.bias.detach()[indices].clone())

    @torch.no_grad()
    def shift_biases(self, log_weights: torch.Tensor) -> None:
        """Add ``log_weights`` (C,) to every head's biases: softmax then gives p * w, renormalised."""
        self.bias += log_weights.to(self.bias)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Accept the one-entry-per-head layout (``heads.<i>.weight``) that runs saved before the heads were batched."""
        per_head = sorted((k for k in state_dict if k.startswith(prefix + "heads.") and k.endswith(".weight")),
                          key=lambda k: int(k[len(prefix + "heads."):].split(".")[0]))
        if per_head and prefix + "weight" not in state_dict:
            state_dict[prefix + "weight"] = torch.stack([state_dict.pop(k) for k in per_head])
            state_dict[prefix + "bias"] = torch.stack([state_dict.pop(k[: -len("weight")] + "bias") for k in per_head])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def uniform_prior_log_weights(probs: torch.Tensor, iterations: int = 100) -> torch.Tensor:
    """Per-cluster log-weights that make the average of the reweighted predictions uniform (mean 0).

    SCAN's entropy term asks for equally large clusters but training ends with some clusters
    over-predicted; rescaling each cluster's probability by w_c (Sinkhorn-Knopp on the columns of
    ``probs`` (N, C), rows renormalised after every step) restores the uniform prior it assumed.
    """
    p = probs.double()
    log_w = torch.zeros(p.shape[1], dtype=torch.float64)
    for _ in range(iterations):
        q = p * log_w.exp()
        marginal = (q / q.sum(1, keepdim=True)).mean(0)
        log_w -= (marginal * p.shape[1]).log()
    return (log_w - log_w.mean()).float()


class ContrastiveModel(nn.Module):
    """Backbone + projection head; ``forward`` gives L2-normalised projections."""

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ContrastiveHead(feature_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)).float(), dim=1)


class ClusteringModel(nn.Module):
    """Backbone + clustering heads; ``forward`` gives logits (H, B, C)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_clusters: int, num_heads: int = 1,
                 normalize_input: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = ClusterHeads(feature_dim, num_clusters, num_heads, normalize_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x))
