"""Backends; see `fastwin.dispatch` for the interface each one implements.

Importing this package registers every compiled op that can exist on this machine (schema, fake
kernel, autograd), so the ops work from the first call, under `torch.compile(fullgraph=True)` and
when called directly through `torch.ops`: the C++ ops when `fastwin._C` was built, the Triton ops
when triton is importable and a GPU (or TRITON_INTERPRET=1) can run them. Neither ever fails the
import: a missing piece becomes the reason `fastwin.backends()` gives for that backend.
"""
from . import extension, triton_backend

extension.load_cpu()
triton_backend.register()
