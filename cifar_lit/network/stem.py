"""A data-initialised, frozen whitening stem that may sit in front of the first block.

Its 2x2 convolution (no padding: 32x32 -> 31x31) projects every 2x2 RGB patch onto the eigenvectors of the
training set's patch covariance, each scaled by 1 / sqrt(eigenvalue + eps), so the output channels are
decorrelated with unit variance; each filter comes with its negative, so the ReLU of the first block loses no sign.
This is the fixed first layer of the fast CIFAR-10 recipes (Page 2018; Jordan 2024, airbench). The filters are a
buffer, never trained: ``fit`` sets them from data when training starts, and checkpoints carry them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WhiteningStem(nn.Module):
    """Frozen patch-whitening convolution: (B, C, H, W) -> (B, 2 * C * patch**2, H - patch + 1, W - patch + 1)."""

    def __init__(self, in_channels: int = 3, patch: int = 2, eps: float = 5e-4) -> None:
        super().__init__()
        self.in_channels, self.patch, self.eps = in_channels, patch, eps
        self.out_channels = 2 * in_channels * patch * patch
        self.register_buffer("weight", torch.zeros(self.out_channels, in_channels, patch, patch))
        self.register_buffer("fitted", torch.tensor(False))  # read when training starts, not per step (no sync)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from (N, C, H, W) normalised float images (a few thousand are plenty)."""
        patches = F.unfold(images.float(), self.patch).transpose(1, 2).flatten(0, 1).double()  # (N * L, C * p * p)
        eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T))
        filters = (eigenvectors / (eigenvalues + self.eps).sqrt()).T.flip(0)  # largest variance first
        filters = filters.reshape(-1, self.in_channels, self.patch, self.patch).float()
        self.weight.copy_(torch.cat([filters, -filters]))
        self.fitted.fill_(True)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, patch={self.patch}, eps={self.eps}"
