"""Muon for convolution filters, Nesterov SGD for everything else, in one optimizer.

Muon (Jordan et al., 2024; airbench94's Muon variant) replaces a filter's momentum update by its nearest
semi-orthogonal matrix: the update, viewed as a (C_out, C_in * k * k) matrix U S V^T, becomes roughly U V^T
(Newton-Schulz iterations, no SVD), so every direction of the filter moves at the same rate. Because a BatchNorm
follows every filter here, only a filter's direction matters: its norm is held at its first value instead of
being decayed, and ``filter_lr`` is a step relative to a filter's (root-mean-square) norm, as in airbench94,
whose filters have norm 1. ``torch.optim.Muon`` takes 2-D parameters only and needs a second optimizer for the
rest; this one takes every parameter, so Lightning's automatic optimisation, the lr schedulers (one ``lr`` per
group) and the checkpoints see a single optimizer.

Parameter groups: each group passed in is split into its 4-D tensors (the filters: ``filter_lr``,
``filter_momentum``, orthogonalised, norm held, no weight decay) and the rest (``lr``, ``momentum``,
``weight_decay``: ``torch.optim.SGD``'s update with Nesterov momentum).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

# Newton-Schulz quintic coefficients that push small singular values up fastest (Jordan, 2024); the result has
# singular values in about [0.7, 1.2] rather than exactly 1, which trains as well as the exact U V^T.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


NS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def orthogonalize(
    matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Approximately U V^T for ``matrix`` = U S V^T, by ``steps`` Newton-Schulz iterations in ``dtype``.

    bfloat16 is what airbench94 and Keller Jordan's Muon use: the iteration only has to land the singular values
    in about [0.7, 1.2], so its 8-bit mantissa suffices, and on a CPU with bf16 units it runs about 2x faster.
    """
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the short side: X X^T is then the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)  # largest singular value <= 1, where the iteration converges
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Orthogonalised momentum updates for 4-D parameters (convolution filters), Nesterov SGD for the others."""

    # No defaults: conf/optimizer/muon.yaml is the one source of these settings. Its values are the measured ones,
    # with the measurements beside them, and a run's saved config (and its checkpoint's hyper-parameters) then
    # records every value the run used; a second set of defaults here could only disagree with it.
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
        nesterov: bool,
        filter_lr: float,
        filter_momentum: float,
        ns_steps: int,
        ns_dtype: str,
    ) -> None:
        for name, value in (("lr", lr), ("filter_lr", filter_lr)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in (("momentum", momentum), ("filter_momentum", filter_momentum)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if ns_steps < 1:
            raise ValueError(f"ns_steps must be >= 1, got {ns_steps}")
        if ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {sorted(NS_DTYPES)}, got {ns_dtype!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, orthogonalize=False)
        self.filter_lr, self.filter_momentum, self.ns_steps = filter_lr, filter_momentum, ns_steps
        self.ns_dtype = NS_DTYPES[ns_dtype]
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Split the group into its filters (4-D: Muon) and the rest (SGD); either part may be empty."""
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        filters = [p for p in params if p.ndim == 4]
        others = [p for p in params if p.ndim != 4]
        if others or not filters:
            super().add_param_group({**param_group, "params": others})
        if filters:
            scale = param_group.get("lr", self.defaults["lr"]) / self.defaults["lr"]  # a group's own lr ratio
            super().add_param_group(
                {
                    **param_group,
                    "params": filters,
                    "lr": self.filter_lr * scale,
                    "momentum": self.filter_momentum,
                    "weight_decay": 0.0,
                    "orthogonalize": True,
                }
            )

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        state = self.state[p]
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.clone()  # as torch.optim.SGD: the first buffer is the gradient
        else:
            state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
        buffer = state["momentum_buffer"]
        update = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        if not group["orthogonalize"]:
            p.add_(update, alpha=-group["lr"])
            return
        if "norm" not in state:
            state["norm"] = p.norm()
        row_norm = state["norm"] / p.shape[0] ** 0.5  # root-mean-square norm of one output filter (a tensor: no sync)
        update = orthogonalize(update.flatten(1), self.ns_steps, dtype=self.ns_dtype).view_as(p).to(p.dtype)
        p.sub_(update.mul_(group["lr"] * row_norm))
        p.mul_(state["norm"] / p.norm())
