"""How setup.py builds fastwin._C (kept here so setup.py stays declarative and the top level stays SPEC §1).

Returns setup() keyword arguments: `ext_modules` and `cmdclass` when sources exist and torch is
importable, nothing otherwise. By default a failing extension build warns instead of failing the
install (CPU users get the pure-PyTorch and Triton backends); with FASTWIN_REQUIRE_CUDA=1 the CUDA
part is required: no CUDA torch, no toolkit, or any compile/link error exits non-zero.

Sources: csrc/ops.cpp (schemas), csrc/cpu/*.cpp (CPU kernels) always; csrc/cuda/*.cu (kernels,
CUDA headers only) and csrc/cuda/*.cpp (torch bindings) only for a CUDAExtension, i.e. where torch
has CUDA and a toolkit is found (csrc/cuda_toolkit.py), unless FASTWIN_SKIP_CUDA=1.
"""
import glob
import os
import warnings

import cuda_toolkit

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
DEFAULT_ARCHS = "8.0;9.0"


def _rel(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


def _cpu_sources():
    return [p for p in _rel(os.path.join("csrc", "**", "*.cpp")) if not p.startswith(os.path.join("csrc", "cuda"))]


def _cuda_sources():
    return _rel(os.path.join("csrc", "cuda", "*.cu")) + _rel(os.path.join("csrc", "cuda", "*.cpp"))


def _max_jobs(with_cuda):
    """Parallel compile jobs: cores, capped by memory (nvcc needs ~4 GiB a job, g++ ~1.5 GiB here)."""
    if os.environ.get("MAX_JOBS"):
        return os.environ["MAX_JOBS"]
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gib = 8
    return str(max(1, min(cores, int(mem_gib // (4 if with_cuda else 1.5)))))


def openmp_flags(torch):
    """-fopenmp when torch's ATen uses OpenMP (Linux wheels).

    at::parallel_for is a header template whose OpenMP backend is a `#pragma omp parallel`: compiled
    without -fopenmp the pragma is dropped and every "parallel" kernel silently runs on one thread.
    Linking with -fopenmp asks for libgomp.so.1, which resolves to the copy torch already loaded.
    """
    import sys

    if not sys.platform.startswith("linux"):
        return []
    try:
        uses_omp = "OpenMP" in torch.__config__.parallel_info()
    except Exception:  # noqa: BLE001 - very old torch: assume the default (OpenMP) backend
        uses_omp = True
    return ["-fopenmp"] if uses_omp else []


def require_cuda(environ=None) -> bool:
    """FASTWIN_REQUIRE_CUDA=1: the CUDA part must build (GPU machines, the rehearsal)."""
    return (os.environ if environ is None else environ).get("FASTWIN_REQUIRE_CUDA") == "1"


def default_arch_list(torch):
    """The visible GPUs' archs (e.g. "9.0" on an H200: one arch compiles in half the time), else DEFAULT_ARCHS."""
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver: build for the defaults
        count = 0
    if not count:
        return DEFAULT_ARCHS
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(count)})
    return ";".join(f"{major}.{minor}" for major, minor in caps)


def cuda_unavailable_reason(torch, toolkit, environ=None):
    """Why the CUDA part will not be built (None: it will)."""
    environ = os.environ if environ is None else environ
    if environ.get("FASTWIN_SKIP_CUDA") == "1":
        return "FASTWIN_SKIP_CUDA=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if toolkit is None:
        return ("no CUDA toolkit found (no include/cuda_runtime_api.h under $CUDA_HOME, behind nvcc on PATH, "
                "or in /usr/local/cuda)")
    if not _cuda_sources():
        return "csrc/cuda has no sources"
    return None


def _build_ext_class(base, strict):
    """The build_ext to use: `base` itself when strict (errors propagate), else one that warns."""
    return base if strict else _optional_build_ext(base)


def _optional_build_ext(base):
    class OptionalBuildExt(base):
        """build_ext that warns and continues: fastwin works without its extension."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                warnings.warn(f"fastwin._C failed to build ({type(exc).__name__}: {exc}); installing without it. "
                              "The cpp/cuda backends will report this.", stacklevel=2)

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"fastwin._C failed to build ({type(exc).__name__}: {exc}); installing without it.",
                              stacklevel=2)

    return OptionalBuildExt


def extension_kwargs():
    if os.environ.get("FASTWIN_SKIP_EXT") == "1" or not _cpu_sources():
        return {}
    strict = require_cuda()
    try:
        import torch
    except ImportError:
        if strict:
            raise SystemExit("FASTWIN_REQUIRE_CUDA=1 but torch is not importable at build time "
                             "(install torch first and use pip install --no-build-isolation)")
        warnings.warn("torch is not importable at build time; fastwin._C is not built "
                      "(install torch first and use pip install --no-build-isolation)", stacklevel=2)
        return {}
    toolkit = cuda_toolkit.find_toolkit()
    if toolkit:
        # Before cpp_extension is imported (it reads CUDA_HOME once); assigned again below in case
        # something imported it earlier.
        os.environ["CUDA_HOME"] = toolkit
    from torch.utils import cpp_extension

    reason = cuda_unavailable_reason(torch, toolkit)
    if reason and strict:
        raise SystemExit(f"FASTWIN_REQUIRE_CUDA=1 but the CUDA part cannot be built: {reason}")
    with_cuda = reason is None
    if with_cuda:
        cpp_extension.CUDA_HOME = toolkit
    os.environ["MAX_JOBS"] = _max_jobs(with_cuda)
    # -ffp-contract=fast: torch builds with -std=c++20 (ISO mode), where GCC otherwise never fuses
    # a * b + c into FMA; the CPU kernels rely on fused multiply-adds.
    cxx = ["-O3", "-ffp-contract=fast"]
    kwargs = dict(
        name="fastwin._C",
        include_dirs=[os.path.join(HERE, "csrc", "include")],
    )
    omp = openmp_flags(torch)
    cxx += omp
    kwargs["extra_link_args"] = omp
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_arch_list(torch))
        # Only the host compiler needs the cuBLAS/cuSPARSE headers: the .cu files include CUDA headers only.
        host = cuda_toolkit.host_include_flags(toolkit, os.path.dirname(torch.__file__))
        ext = cpp_extension.CUDAExtension(
            sources=_cpu_sources() + _cuda_sources(),
            extra_compile_args={"cxx": cxx + host + ["-DFASTWIN_WITH_CUDA"], "nvcc": ["-O3", "-lineinfo"]},
            **kwargs,
        )
    else:
        ext = cpp_extension.CppExtension(sources=_cpu_sources(), extra_compile_args={"cxx": cxx}, **kwargs)
    build_ext = _build_ext_class(cpp_extension.BuildExtension, strict).with_options(use_ninja=True)
    return {"ext_modules": [ext], "cmdclass": {"build_ext": build_ext}}
