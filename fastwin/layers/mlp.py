"""Transformer MLP (Linear -> GELU -> Linear), parameter names as timm/official (`fc1`, `fc2`)."""
from __future__ import annotations

import torch.nn as nn

from .. import ops
from . import projection


class Mlp(nn.Module):
    """`fc2(drop(act(fc1(x))))` then dropout; with a GELU activation, `fc1` and the GELU run as one
    op (`fastwin.ops.linear_gelu`), which a backend may fuse.

    forward(x [..., C], residual [..., C_out] | None) -> [residual +] mlp(x), [..., C_out]; the add
    runs in fc2's epilogue when the dropout passes through."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x, residual=None):
        if type(self.act) is nn.GELU:  # exactly GELU: a subclass may compute something else
            h = ops.linear_gelu(x, self.fc1.weight, self.fc1.bias, self.act.approximate)
        else:
            h = self.act(self.fc1(x))
        if projection.passes_through(self.drop):
            return projection.linear(self.fc2, h, residual)
        y = self.drop(self.fc2(self.drop(h)))
        return y if residual is None else residual + y
