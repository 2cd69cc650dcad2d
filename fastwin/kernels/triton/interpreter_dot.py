"""`tl.dot` under Triton's CPU interpreter (TRITON_INTERPRET=1) in the GPU's summation order.

The interpreter computes `tl.dot(a, b)` as one `np.matmul`, and numpy's OpenBLAS picks its kernel by the
matrix shape and the CPU, so the same row-by-column product rounds differently in tiles of different
shapes: on this project's AMD EPYC (Zen 5), 300-1,400 of 4,096 entries of a [64, 16] x [16, 64] product
differed between 16x16, 32x32 and 64x16 tilings. The attention backward computes dP = dO V^T twice, in the
dq kernel's tiles (for delta = rowsum(P * dP)) and in the dk/dv kernel's, and dS = P (dP - delta) cancels
under a saturated softmax, so the interpreter's mismatch alone put windows of 48 and 64 tokens with Swin V2
logits past the SPEC §6 bound (up to 4.5x it on grad logit_scale) while the cpp kernels stayed at 0.3x.
On the GPU an fp32 `tl.dot(input_precision="ieee")` is a chain of FMAs over k in order for every entry, and
MMAs accumulate their k-steps in a fixed order, whatever the tile: the same product rounds the same way in
both kernels.

`install()` makes the interpreter do the same: each fp32-accumulated dot becomes FMAs over k in order (one
rounding per step, as the GPU). The interpreted Triton path then lands where the cpp kernels do: at most
0.31x the bound over 24 seeded runs of those cases (cpp: 0.31x), same run time. bf16 operands, which the
interpreter keeps as raw uint16 bits (its own dot multiplied the bits: garbage), are read as the numbers
they are, so the kernels' bf16 paths run on CPU too (46 conformance cases, all within the bound); fp8 and
integer operands and non-fp32 accumulators keep the interpreter's own dot.
fastwin installs it when it registers its kernels on the interpreter (`fastwin.backend.triton_ops`); it
changes nothing else, and nothing at all on a GPU.
"""
from __future__ import annotations

import numpy as np
import triton.language as tl

__all__ = ["install", "installed"]

_installed = []
_FLOATS = (np.dtype(np.float16), np.dtype(np.float32))


def _operand(h) -> "np.ndarray | None":
    """A dot operand's values in fp32 (exact for fp16 and bf16), or None for what the GPU path would not
    take here (fp8, integers). The interpreter keeps bf16 as raw uint16 bits: they are the top half of fp32's."""
    if h.data.dtype in _FLOATS:
        return h.data.astype(np.float32)
    if h.dtype.scalar == tl.bfloat16 and h.data.dtype == np.uint16:
        return (h.data.astype(np.uint32) << 16).view(np.float32)
    return None


def installed() -> bool:
    """Whether `install()` patched the interpreter's dot."""
    return bool(_installed)


def install() -> bool:
    """Patch the running triton's interpreter (once); False when there is no interpreter to patch."""
    if _installed:
        return True
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    builder = getattr(interpreter, "InterpreterBuilder", None)
    fma = getattr(getattr(interpreter, "_interpreter", None), "fma_fp32", None)
    if builder is None or fma is None or not hasattr(builder, "create_dot"):
        return False
    plain = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        x, y = _operand(a), _operand(b)
        if d.data.dtype != np.float32 or x is None or y is None or x.ndim != 2 or y.ndim != 2:
            return plain(self, a, b, d, input_precision, max_num_imprecise_acc)
        acc = np.ascontiguousarray(np.broadcast_to(d.data, (x.shape[0], y.shape[1])), dtype=np.float32)
        for k in range(x.shape[1]):
            acc = fma(*np.broadcast_arrays(x[:, k:k + 1], y[k:k + 1, :], acc))
        return interpreter.TensorHandle(acc, d.dtype.scalar)

    builder.create_dot = create_dot
    _installed.append(plain)
    return True
