"""The first half of a transformer MLP: Linear followed by GELU."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def linear_gelu_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    approximate: str = "none", save_preact: bool = False) -> torch.Tensor:
    """gelu(x @ weight^T + bias).

    Args:
        x: [..., K]; weight: [N, K]; bias: [N] or None.
        approximate: "none" (erf form) or "tanh", as `torch.nn.GELU`.
        save_preact: whether a kernel should keep the pre-activation for its backward (the schema's
            argument; the reference's autograd keeps what it needs).
    Returns:
        [..., N].
    """
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
               residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[residual +] x @ weight^T + bias: a projection, optionally followed by the block's residual add.

    Args:
        x: [..., K]; weight: [N, K]; bias: [N] or None; residual: [..., N] or None.
    Returns:
        [..., N].
    """
    y = F.linear(x, weight, bias)
    return y if residual is None else residual + y


def conv1x1_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                gelu: Optional[str] = None, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[residual +] act(conv2d(x, weight, bias)) for a 1x1 convolution (a Linear over channels of NCHW).

    Args:
        x: [B, Cin, H, W]; weight: [Cout, Cin, 1, 1]; bias: [Cout] or None.
        gelu: None (no activation) or the GELU form applied after the conv, "none" (erf) or "tanh".
        residual: [B, Cout, H, W] or None (added after the activation).
    Returns:
        [B, Cout, H, W].
    """
    y = F.conv2d(x, weight, bias)
    if gelu is not None:
        y = F.gelu(y, approximate=gelu)
    return y if residual is None else residual + y
