"""Where the CUDA toolkit and the CUDA library headers are, for setup.py and the JIT build.

torch guesses CUDA_HOME as the parent of the directory of the first `nvcc` on PATH. On images where
`/usr/local/bin/nvcc` is a wrapper script (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`) that guess is
`/usr/local`, which has no `include/cuda_runtime_api.h`, and every file including ATen's CUDA headers
fails. Here the toolkit is the directory that really holds those headers: a symlinked nvcc is
followed, a wrapper script is read for the nvcc it runs, and as a last resort nvcc itself is asked
(`nvcc --dryrun` prints `#$ _HERE_=<toolkit>/bin`).

ATen's CUDA headers also include cuBLAS, cuSPARSE and cuSOLVER headers, which a compiler-only
toolkit lacks; torch's pip dependencies ship them (`site-packages/nvidia/cu13/include` for CUDA 13,
`nvidia/<library>/include` for CUDA 12). `wheel_include_dirs` finds those that fill the gap.

Stdlib only: setup.py imports this before it knows whether torch is importable.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import List, Mapping, Optional

RUNTIME_HEADER = "cuda_runtime_api.h"
# The library headers ATen/cuda/CUDAContext.h pulls in (directly or through CUDAContextLight.h).
LIBRARY_HEADERS = ("cublas_v2.h", "cublasLt.h", "cusparse.h", "cusolverDn.h")
_WRAPPER_MAX_BYTES = 64 * 1024  # a wrapper script is tiny; a real nvcc is a multi-MB binary
_EXEC_LINE = re.compile(r"""(?:^|[\s;'"])(/[^\s'";]*/nvcc)(?=$|[\s'";])""", re.MULTILINE)
_DRYRUN_HERE = re.compile(r"^#\$ _HERE_=(.+)$", re.MULTILINE)


def is_toolkit(root: Optional[str]) -> bool:
    """True if `root` holds `include/cuda_runtime_api.h` and `bin/nvcc`."""
    return bool(root) and os.path.isfile(os.path.join(root, "include", RUNTIME_HEADER)) \
        and os.path.isfile(os.path.join(root, "bin", "nvcc"))


def _root_of(nvcc: str) -> str:
    return os.path.dirname(os.path.dirname(nvcc))


def _wrapped_nvcc(path: str) -> List[str]:
    """The absolute `.../nvcc` paths a small text wrapper script mentions (none for a binary)."""
    try:
        if os.path.getsize(path) > _WRAPPER_MAX_BYTES:
            return []
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return []
    if b"\0" in data:
        return []
    return _EXEC_LINE.findall(data.decode("utf-8", "replace"))


def _asked_nvcc(nvcc: str) -> Optional[str]:
    """The toolkit nvcc reports with `--dryrun` (it compiles nothing and needs no input file)."""
    try:
        done = subprocess.run([nvcc, "--dryrun", "-c", "fastwin_probe.cu"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = _DRYRUN_HERE.search(done.stdout + done.stderr)
    return os.path.normpath(os.path.dirname(found.group(1).strip())) if found else None


def toolkit_from_nvcc(nvcc: str) -> Optional[str]:
    """The toolkit root behind an nvcc path: itself, its symlink target, or what a wrapper runs."""
    if is_toolkit(_root_of(os.path.abspath(nvcc))):
        return _root_of(os.path.abspath(nvcc))
    real = os.path.realpath(nvcc)
    if is_toolkit(_root_of(real)):
        return _root_of(real)
    for target in _wrapped_nvcc(real):
        root = _root_of(os.path.realpath(target))
        if is_toolkit(root):
            return root
    asked = _asked_nvcc(nvcc)
    return asked if is_toolkit(asked) else None


def find_toolkit(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The CUDA toolkit root: $CUDA_HOME / $CUDA_PATH if valid, else behind `nvcc` on PATH, else /usr/local/cuda.

    Args:
        environ: the environment to read (default `os.environ`).

    Returns:
        A directory holding `include/cuda_runtime_api.h` and `bin/nvcc`, or None.
    """
    environ = os.environ if environ is None else environ
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if is_toolkit(environ.get(name)):
            return os.path.abspath(environ[name])
    nvcc = shutil.which("nvcc", path=environ.get("PATH", os.defpath))
    if nvcc:
        root = toolkit_from_nvcc(nvcc)
        if root:
            return root
    return "/usr/local/cuda" if is_toolkit("/usr/local/cuda") else None


def missing_library_headers(toolkit: str) -> List[str]:
    """The LIBRARY_HEADERS that `toolkit/include` lacks."""
    return [h for h in LIBRARY_HEADERS if not os.path.isfile(os.path.join(toolkit, "include", h))]


def wheel_include_dirs(torch_dir: str, headers: List[str]) -> List[str]:
    """The `site-packages/nvidia/*/include` directories (next to torch) that hold any of `headers`.

    Args:
        torch_dir: the directory of the torch package (`os.path.dirname(torch.__file__)`).
        headers: header file names to look for.

    Returns:
        Sorted directories; empty if none of them holds any of the headers.
    """
    site = os.path.dirname(os.path.abspath(torch_dir))
    found = []
    for include in sorted(glob.glob(os.path.join(site, "nvidia", "*", "include"))):
        if any(os.path.isfile(os.path.join(include, h)) for h in headers):
            found.append(include)
    return found


def host_include_flags(toolkit: str, torch_dir: str) -> List[str]:
    """`-idirafter DIR` flags for the host compiler: the wheel headers the toolkit lacks, searched last.

    `-idirafter` (not `-I`) so the toolkit's own cuda_runtime_api.h and friends always win over the
    copies in the wheel directory; the wheels only fill in what is missing.
    """
    flags = []
    for include in wheel_include_dirs(torch_dir, missing_library_headers(toolkit)):
        flags += ["-idirafter", include]
    return flags
