"""The first half of a transformer MLP: Linear followed by GELU."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def linear_gelu_ref(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                    approximate: str = "none") -> torch.Tensor:
    """gelu(x @ weight^T + bias).

    Args:
        x: [..., K]; weight: [N, K]; bias: [N] or None.
        approximate: "none" (erf form) or "tanh", as `torch.nn.GELU`.
    Returns:
        [..., N].
    """
    return F.gelu(F.linear(x, weight, bias), approximate=approximate)
