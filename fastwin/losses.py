"""DeiT hard / soft distillation loss (Touvron et al., 2021, "Training data-efficient image
transformers & distillation through attention", Sec. 4 and the official training recipe)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DistillationLoss"]

TYPES = ("none", "soft", "hard")


class DistillationLoss(nn.Module):
    """`(1 - alpha) * base_criterion(cls_logits, labels) + alpha * distill(dist_logits, teacher(inputs))`.

    - "none": `base_criterion(outputs, labels)` only (the teacher is not run).
    - "soft": `KL(softmax(teacher / tau) || softmax(dist / tau)) * tau**2`, the KL summed and divided
      by `dist_logits.numel()` (= B * num_classes), as the DeiT code does.
    - "hard": `cross_entropy(dist_logits, teacher.argmax(1))`.

    Args:
        base_criterion: loss on the class-token logits (e.g. `nn.CrossEntropyLoss()`).
        teacher_model: module mapping the inputs to teacher logits [B, num_classes]; run under
            `torch.no_grad()` (ignored for "none", may then be None).
        distillation_type: "none", "soft" or "hard".
        alpha: weight of the distillation term, in [0, 1].
        tau: softmax temperature of the soft loss, > 0.

    forward(inputs, outputs, labels): `outputs` is the model's `(cls_logits, dist_logits)` tuple
    (a plain tensor is accepted only for "none"). Returns a scalar.
    """

    def __init__(self, base_criterion: nn.Module, teacher_model, distillation_type: str = "none",
                 alpha: float = 0.5, tau: float = 1.0):
        super().__init__()
        if distillation_type not in TYPES:
            raise ValueError(f"distillation_type must be one of {TYPES}, got {distillation_type!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if distillation_type != "none" and teacher_model is None:
            raise ValueError(f"distillation_type={distillation_type!r} needs a teacher_model")
        self.base_criterion = base_criterion
        self.teacher_model = teacher_model
        self.distillation_type = distillation_type
        self.alpha = float(alpha)
        self.tau = float(tau)

    def forward(self, inputs: torch.Tensor, outputs, labels: torch.Tensor) -> torch.Tensor:
        outputs_kd = None
        if not isinstance(outputs, torch.Tensor):
            if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
                raise TypeError("outputs must be a tensor or a (cls_logits, dist_logits) pair")
            outputs, outputs_kd = outputs
        base_loss = self.base_criterion(outputs, labels)
        if self.distillation_type == "none":
            return base_loss
        if outputs_kd is None:
            raise ValueError(
                "distillation needs the model's (cls_logits, dist_logits) pair: use a distilled DeiT in training mode"
            )
        with torch.no_grad():
            teacher = self.teacher_model(inputs)
        if teacher.shape != outputs_kd.shape:
            raise ValueError(f"teacher logits {tuple(teacher.shape)} do not match "
                             f"dist logits {tuple(outputs_kd.shape)}")
        if self.distillation_type == "soft":
            t = self.tau
            kl = F.kl_div(F.log_softmax(outputs_kd / t, dim=1), F.log_softmax(teacher / t, dim=1),
                          reduction="sum", log_target=True)
            distill = kl * (t * t) / outputs_kd.numel()
        else:
            distill = F.cross_entropy(outputs_kd, teacher.argmax(dim=1))
        return base_loss * (1 - self.alpha) + distill * self.alpha
