"""Non-contiguous views of a [B, H, W, 3C] qkv map that exercise the kernels' stride handling."""
import torch

QKV_LAYOUTS = ["channels_strided", "misaligned", "row_padded"]


def strided_qkv(q: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as `q`, laid out as `layout` (a differentiable view, never contiguous)."""
    C3 = q.shape[-1]
    if layout == "channels_strided":  # channel stride H * W: element-wise loads
        q = q.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    elif layout == "misaligned":  # base pointer off 16-byte alignment
        q = torch.nn.functional.pad(q, (1, 0))[..., 1:]
    else:  # rows padded: a pixel stride != 3C
        q = torch.nn.functional.pad(q, (0, 8))[..., :C3]
    assert not q.is_contiguous()
    return q
