"""Kernels: Triton sources under `triton/`; the C++/CUDA extension is `fastwin._C` (built from csrc/)."""
