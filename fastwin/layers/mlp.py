"""Transformer MLP (Linear -> GELU -> Linear), parameter names as timm/official (`fc1`, `fc2`)."""
from __future__ import annotations

import torch.nn as nn


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):  # [..., C] -> [..., C_out]
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
