"""Triton kernels. Import only where triton is installed (the backend module checks first)."""
