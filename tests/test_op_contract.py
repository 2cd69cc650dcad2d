"""The op contract (issue 11, SPEC §4): every op is registered at `import fastwin`, every registered op
passes opcheck and backpropagates through direct `torch.ops` calls, double backward is exact or a clear
error on every backend, backend choice is per thread / per call / per module, and the package's
imports go one way."""
import ast
import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import fastwin
from fastwin import dispatch, ops
from fastwin.backend import library

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMESPACES = [ns for ns, backend in (("fastwin_C", "cpp"), ("fastwin", "triton")) if fastwin.backends()[backend]]
FAST = [name for name in ("cpp", "triton", "cuda") if fastwin.backends()[name]]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _device_for(namespace):
    return "cpu" if namespace == "fastwin_C" else DEVICE


def _sample(op: str, device, dtype=torch.float32, d=16):
    """(tensor inputs, attributes) of `<op>_fwd` at a tiny shape with padding, shift and every input.

    Head dim `d`: 16 is the smallest the Triton kernels take; the C++ kernels take any (gradcheck in
    fp64 uses 4 to stay fast)."""
    r = lambda *s: torch.randn(*s, device=device, dtype=dtype)  # noqa: E731
    c3 = 3 * 2 * d
    if op == "shifted_window_attention":
        return [r(1, 3, 5, c3), r(9, 2), r(c3)], [2, [2, 2], [1, 1], 0.3, True]
    if op == "window_attention":
        mask = torch.where(torch.rand(2, 4, 4, device=device) < 0.3, -100.0, 0.0).to(dtype) + 0.1 * r(2, 4, 4)
        return [r(4, 4, c3), r(9, 2), mask], [2, [2, 2], 0.3]
    if op == "attention":
        return [r(2, 5, c3)], [2, 0.3]
    if op == "dwconv2d":
        return [r(2, 3, 5, 4).contiguous(memory_format=torch.channels_last), r(3, 1, 3, 3), r(3)], [True, "NCHW"]
    if op == "dwconv_layernorm":
        return [r(1, 5, 4, 3), r(3, 1, 3, 3), r(3), r(3), r(3)], [1e-6, "NHWC"]
    if op == "linear_gelu":
        return [r(2, 3, 12), r(8, 12), r(8)], ["tanh", True]
    raise AssertionError(op)


def _registered(namespace):
    return [spec for spec in library.SPECS.values() if library._has_op(namespace, f"{spec.name}_fwd")]


def _cases():
    return [(ns, spec.name) for ns in NAMESPACES for spec in _registered(ns)]


def test_every_op_is_registered_at_import():
    """In a fresh interpreter, right after `import fastwin`: schemas, fakes and autograd are in place."""
    code = textwrap.dedent("""
        import torch, fastwin
        from fastwin.backend import library
        names = {"cpp": "fastwin_C", "triton": "fastwin"}
        for backend, ns in names.items():
            if fastwin.backend.triton_backend.available() is None or backend == "cpp":
                for spec in library.SPECS.values():
                    if library._has_op(ns, spec.name + "_fwd"):
                        op = f"{ns}::{spec.name}_fwd"
                        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Autograd"), op
                        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Meta"), op
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_compile_fullgraph_in_a_fresh_process():
    """torch.compile(block, fullgraph=True) with `auto` on CPU, no warm-up call, matches eager."""
    code = textwrap.dedent("""
        import torch, fastwin
        torch.manual_seed(0)
        block = fastwin.SwinTransformerBlock(32, (10, 9), 2, window_size=7, shift_size=3).eval()
        x = torch.randn(2, 10, 9, 32)
        with torch.no_grad():
            compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(x)
            eager = block(x)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.mark.parametrize("namespace,op", _cases())
def test_opcheck_forward_and_backward_ops(namespace, op):
    spec = library.SPECS[op]
    tensors, attrs = _sample(op, _device_for(namespace))
    ns = getattr(torch.ops, namespace)
    fwd, bwd = getattr(ns, f"{op}_fwd").default, getattr(ns, f"{op}_bwd").default
    leaves = [t.requires_grad_() for t in tensors]
    torch.library.opcheck(fwd, (*leaves, *attrs))
    with torch.no_grad():
        results = fwd(*tensors, *attrs)
    results = results if isinstance(results, tuple) else (results,)
    grads = [torch.randn_like(results[i]) for i in range(spec.outputs)]
    saved = [results[i] for i in spec.saved]
    needs = [True] * len(spec.differentiable)
    torch.library.opcheck(bwd, (*grads, *saved, *[t.detach() for t in tensors], *attrs, needs),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("namespace,op", _cases())
def test_direct_calls_backpropagate(namespace, op):
    """`torch.ops.<ns>.<op>_fwd` called directly gives the reference's gradients (no warm-up needed)."""
    spec = library.SPECS[op]
    device = _device_for(namespace)
    dtype = torch.float64 if namespace == "fastwin_C" else torch.float32
    tensors, attrs = _sample(op, device, dtype, d=4 if dtype == torch.float64 else 16)
    fwd = getattr(getattr(torch.ops, namespace), f"{op}_fwd")
    if dtype == torch.float64:
        def outputs(*a):
            got = fwd(*a, *attrs)
            return got[:spec.outputs] if isinstance(got, tuple) else got

        assert torch.autograd.gradcheck(outputs, [t.requires_grad_() for t in tensors])
        return
    got_in = [t.clone().requires_grad_() for t in tensors]
    got = fwd(*got_in, *attrs)
    got = got if isinstance(got, tuple) else (got,)
    ref_in = [t.double().requires_grad_() for t in tensors]
    ref = spec.reference(*ref_in, *attrs)
    cot = [torch.randn_like(r) for r in ref]
    g_got = torch.autograd.grad(got[:spec.outputs], got_in, [c.to(dtype) for c in cot], allow_unused=True)
    g_ref = torch.autograd.grad(ref, ref_in, cot, allow_unused=True)
    for a, b in zip(g_got, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


def _double_backward(op_call, backend):
    """grad of (d loss / d inputs)^2 w.r.t. the inputs, via create_graph=True."""
    tensors = op_call.tensors()
    leaves = [t.clone().requires_grad_() for t in tensors]
    with fastwin.set_backend(backend, strict=True):
        out = op_call.run(leaves)
    out = out[0] if isinstance(out, tuple) else out
    first = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out).to(out)).sum(), leaves,
                                create_graph=True)
    return torch.autograd.grad(sum(g.square().sum() for g in first), leaves, allow_unused=True)


class _OpCall:
    def __init__(self, op, run):
        self.op, self.run_fn = op, run
        self.data = [t for t in _sample(op, DEVICE if op != "dwconv_layernorm" else DEVICE)[0]]

    def tensors(self):
        return self.data

    def run(self, leaves):
        return self.run_fn(*leaves)


DOUBLE = {
    "shifted_window_attention": lambda q, t, b: ops.shifted_window_attention(q, 2, 2, 1, t, b, 0.3, "pad_roll"),
    "window_attention": lambda q, t, m: ops.window_attention(q, 2, 2, t, m, 0.3),
    "attention": lambda q: ops.attention(q, 2, 0.3),
    "dwconv2d": lambda x, w, b: ops.dwconv2d(x, w, b, True),
    "dwconv_layernorm": lambda x, w, b, lw, lb: ops.dwconv_layernorm(x, w, b, lw, lb, 1e-6, "NHWC")[1],
    "linear_gelu": lambda x, w, b: ops.linear_gelu(x, w, b, "tanh"),
}


@pytest.mark.parametrize("backend", FAST or [pytest.param("none", marks=pytest.mark.skip("no fast backend"))])
@pytest.mark.parametrize("op", list(DOUBLE))
def test_double_backward_equals_reference(backend, op):
    call = _OpCall(op, DOUBLE[op])
    device = "cpu" if backend == "cpp" else DEVICE
    call.data = [t.to(device) for t in call.data]
    reason = dispatch.why_not(backend, ops.describe(op, *_describe_args(op, call.data)))
    if reason is not None:
        pytest.skip(reason)
    got = _double_backward(call, backend)
    with sdpa_kernel(SDPBackend.MATH):  # SDPA's fused kernels have no double backward of their own
        want = _double_backward(call, "reference")
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _describe_args(op, data):
    return {
        "shifted_window_attention": lambda q, t, b: (q, 2, 2, 1, t, b, 0.3, "pad_roll"),
        "window_attention": lambda q, t, m: (q, 2, 2, t, m, 0.3),
        "attention": lambda q: (q, 2, 0.3),
        "dwconv2d": lambda x, w, b: (x, w, b, True),
        "dwconv_layernorm": lambda x, w, b, lw, lb: (x, w, b, lw, lb, 1e-6, "NHWC"),
        "linear_gelu": lambda x, w, b: (x, w, b, "tanh"),
    }[op](*data)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_backward_ops_refuse_to_be_differentiated(namespace):
    tensors, attrs = _sample("attention", _device_for(namespace))
    ns = getattr(torch.ops, namespace)
    out, lse = ns.attention_fwd(*tensors, *attrs)
    qkv = tensors[0].requires_grad_()
    dq = ns.attention_bwd(torch.randn_like(out), out, lse, qkv, *attrs, [True])
    with pytest.raises(RuntimeError, match="cannot be differentiated"):
        dq.sum().backward()


def test_set_backend_is_per_thread():
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name):
        with fastwin.set_backend(name):
            barrier.wait()  # both contexts are open at once
            with dispatch.record() as ran:
                ops.attention(torch.randn(1, 5, 48), 2)
            seen[name] = (fastwin.get_backend(), ran[0][1])
            barrier.wait()

    names = ["reference", FAST[0] if "cpp" in FAST else "auto"]
    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["reference"] == ("reference", "reference")
    assert seen[names[1]][0] == names[1]
    assert fastwin.get_backend() == "auto"  # the main thread never changed


def test_backend_argument_per_call_and_per_module():
    qkv = torch.randn(2, 5, 48)
    with dispatch.record() as ran:
        ops.attention(qkv, 2, backend="reference")
        fastwin.layers.Attention(16, 2, backend="reference")(torch.randn(2, 5, 16))
    # the module's backend covers its projections too (qkv, attention, proj)
    assert ran == [("attention", "reference"), ("linear", "reference"), ("attention", "reference"),
                   ("linear", "reference")]
    with pytest.raises(ValueError, match="backend must be"):
        fastwin.WindowAttention(16, 2, 2, backend="fastest")


def test_bind_carries_the_choice_into_other_threads():
    result = {}
    with fastwin.set_backend("reference"):
        fn = ops.bound(lambda: fastwin.get_backend())
    t = threading.Thread(target=lambda: result.setdefault("choice", fn()))
    t.start()
    t.join()
    assert result["choice"] == "reference"


def _imports(path):
    """Absolute module names a fastwin source file imports at module level or in functions."""
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    pkg = rel if rel.endswith("__init__") else rel.rsplit(".", 1)[0]
    pkg = pkg.replace(".__init__", "")
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("fastwin"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastwin"))
    return found


def _module_graph():
    graph = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "fastwin")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").replace(".__init__", "")
                graph[name] = _imports(path)
    return {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}


def test_layering_models_do_not_import_swap_and_nothing_above_ops_imports_reference():
    graph = _module_graph()
    for name, deps in graph.items():
        if name.startswith(("fastwin.models", "fastwin.layers")):
            assert not any(d.startswith("fastwin.swap") for d in deps), (name, deps)
        if name.startswith(("fastwin.models", "fastwin.layers", "fastwin.swap")):
            assert not any(d.startswith(("fastwin.reference", "fastwin.backend", "fastwin.dispatch"))
                           for d in deps), (name, deps)
        if name.startswith("fastwin.reference"):
            assert not deps - {n for n in graph if n.startswith("fastwin.reference")}, (name, deps)


def test_no_import_cycles_between_packages():
    """Package-level import graph (models, layers, ops, swap, backend, reference ...) is acyclic."""
    def pkg(name):
        parts = name.split(".")
        return ".".join(parts[:2])

    graph = {}
    for name, deps in _module_graph().items():
        graph.setdefault(pkg(name), set()).update(pkg(d) for d in deps if pkg(d) != pkg(name))
    # fastwin/__init__ re-exports everything; the other packages must not import it back
    graph.pop("fastwin", None)
    seen, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(node):] + [node])}")
        if node in seen:
            return
        stack.append(node)
        for dep in graph.get(node, ()):
            visit(dep)
        stack.pop()
        seen.add(node)

    for node in list(graph):
        visit(node)
