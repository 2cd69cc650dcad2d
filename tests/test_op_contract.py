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
from fastwin import contract, dispatch, ops
from fastwin.backend import library
from tests.helpers import FAST

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMESPACES = [ns for ns, backend in (("fastwin_C", "cpp"), ("fastwin", "triton")) if fastwin.backends()[backend]]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _device_for(namespace):
    return "cpu" if namespace == "fastwin_C" else DEVICE


def _mask(n, dtype, device):
    """A Swin-like additive mask [2, n, n]: 0 or -100 on ~30% of the pairs, plus noise."""
    return torch.where(torch.rand(2, n, n, device=device) < 0.3, -100.0, 0.0).to(dtype) + \
        0.1 * torch.randn(2, n, n, device=device, dtype=dtype)


# Per op of the contract: its tensor inputs (in the row's order, as functions of the head dim d and a
# random-tensor maker) and the other arguments of its `fastwin.ops` function: a tiny shape with padding,
# shift and every input. Everything else a test needs (the raw `<op>_fwd` arguments, the op call) is
# derived from these through the contract.
SAMPLES = {
    "shifted_window_attention": (lambda d, r: (r(1, 3, 5, 6 * d), r(9, 2), r(6 * d)),
                                 dict(num_heads=2, window_size=2, shift_size=1, scale=0.3, pad_order="pad_roll")),
    "window_attention": (lambda d, r: (r(4, 4, 6 * d), r(9, 2), _mask(4, r(1).dtype, r(1).device)),
                         dict(num_heads=2, window_size=2, scale=0.3)),
    "attention": (lambda d, r: (r(2, 5, 6 * d),), dict(num_heads=2, scale=0.3)),
    "dwconv2d": (lambda d, r: (r(2, 3, 5, 4).contiguous(memory_format=torch.channels_last), r(3, 1, 3, 3), r(3)),
                 dict(residual=True, layout="NCHW")),
    "dwconv_layernorm": (lambda d, r: (r(1, 5, 4, 3), r(3, 1, 3, 3), r(3), r(3), r(3)), dict(eps=1e-6, layout="NHWC")),
    "linear_gelu": (lambda d, r: (r(2, 3, 12), r(8, 12), r(8)), dict(approximate="tanh")),
}


def _tensors(op: str, device, dtype=torch.float32, d=16):
    """The sample's tensor inputs. Head dim `d`: 16 is the smallest the Triton kernels take; the C++
    kernels take any (gradcheck in fp64 uses 4 to stay fast)."""
    return list(SAMPLES[op][0](d, lambda *s: torch.randn(*s, device=device, dtype=dtype)))


def _call(op: str, tensors, backend=None):
    """`fastwin.ops.<op>` on the sample: the tensors by their contract names, the other arguments."""
    return getattr(ops, op)(**dict(zip(contract.OPS[op].inputs, tensors)), **SAMPLES[op][1], backend=backend)


def _sample(op: str, device, dtype=torch.float32, d=16):
    """(tensor inputs, attributes) of `<op>_fwd` on the sample: what `fastwin.ops.<op>` hands a backend
    (for inputs that require grad), cut to the schema's arguments."""
    row = contract.OPS[op]
    tensors = [t.requires_grad_() for t in _tensors(op, device, dtype, d)]
    args = ops.arguments(op, **dict(zip(row.inputs, tensors)), **SAMPLES[op][1])
    n = len(row.inputs)
    return [t.detach() for t in args[:n]], list(args[n:row.n_args])


def _registered(namespace):
    return [row for row in contract.FUSED if library.has_op(namespace, f"{row.name}_fwd")]


def _cases():
    return [(ns, spec.name) for ns in NAMESPACES for spec in _registered(ns)]


def test_every_op_is_registered_at_import():
    """In a fresh interpreter, right after `import fastwin`: schemas, fakes and autograd are in place."""
    code = textwrap.dedent("""
        import torch, fastwin
        from fastwin import contract
        from fastwin.backend import library
        names = {"cpp": "fastwin_C", "triton": "fastwin"}
        for backend, ns in names.items():
            if fastwin.backend.triton_backend.available() is None or backend == "cpp":
                for spec in contract.FUSED:
                    if library.has_op(ns, spec.name + "_fwd"):
                        op = f"{ns}::{spec.name}_fwd"
                        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Autograd"), op
                        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Meta"), op
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


@pytest.mark.slow  # torch.compile in a fresh interpreter
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
    spec = contract.OPS[op]
    tensors, attrs = _sample(op, _device_for(namespace))
    ns = getattr(torch.ops, namespace)
    fwd, bwd = getattr(ns, f"{op}_fwd").default, getattr(ns, f"{op}_bwd").default
    leaves = [t.requires_grad_() for t in tensors]
    torch.library.opcheck(fwd, (*leaves, *attrs))
    with torch.no_grad():
        results = fwd(*tensors, *attrs)
    results = results if isinstance(results, tuple) else (results,)
    grads = [torch.randn_like(results[i]) for i in range(spec.outputs)]
    saved = [results[i] for i in spec.saved_at]
    needs = [True] * len(spec.differentiable)
    torch.library.opcheck(bwd, (*grads, *saved, *[t.detach() for t in tensors], *attrs, needs),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.parametrize("namespace,op", _cases())
def test_direct_calls_backpropagate(namespace, op):
    """`torch.ops.<ns>.<op>_fwd` called directly gives the reference's gradients (no warm-up needed)."""
    spec = contract.OPS[op]
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
    ref = ref if isinstance(ref, tuple) else (ref,)
    cot = [torch.randn_like(r) for r in ref]
    g_got = torch.autograd.grad(got[:spec.outputs], got_in, [c.to(dtype) for c in cot], allow_unused=True)
    g_ref = torch.autograd.grad(ref, ref_in, cot, allow_unused=True)
    for a, b in zip(g_got, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


def _double_backward(op, tensors, backend):
    """grad of (d loss / d inputs)^2 w.r.t. the inputs, via create_graph=True."""
    leaves = [t.clone().requires_grad_() for t in tensors]
    with fastwin.set_backend(backend, strict=True):
        out = _call(op, leaves)
    out = out[-1] if isinstance(out, tuple) else out  # dwconv_layernorm: the normed tokens
    first = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out).to(out)).sum(), leaves,
                                create_graph=True)
    return torch.autograd.grad(sum(g.square().sum() for g in first), leaves, allow_unused=True)


@pytest.mark.parametrize("backend", FAST or [pytest.param("none", marks=pytest.mark.skip("no fast backend"))])
@pytest.mark.parametrize("op", list(SAMPLES))
def test_double_backward_equals_reference(backend, op):
    device = "cpu" if backend == "cpp" else DEVICE
    tensors = _tensors(op, device)
    reason = dispatch.why_not(backend, ops.describe(op, **dict(zip(contract.OPS[op].inputs, tensors)),
                                                    **SAMPLES[op][1]))
    if reason is not None:
        pytest.skip(reason)
    got = _double_backward(op, tensors, backend)
    with sdpa_kernel(SDPBackend.MATH):  # SDPA's fused kernels have no double backward of their own
        want = _double_backward(op, tensors, "reference")
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_every_fused_op_has_a_sample():
    assert set(SAMPLES) == {row.name for row in contract.FUSED}


@pytest.mark.parametrize("op", [row.name for row in contract.CPP])
def test_cpp_schemas_are_the_contract(op):
    """The C++ schemas (csrc/) declare exactly the contract rows' argument lists and results."""
    if not fastwin.backends()["cpp"]:
        pytest.skip(fastwin.backends().reasons["cpp"])
    row = contract.OPS[op]
    for kind, schema in (("fwd", row.fwd_schema), ("bwd", row.bwd_schema)):
        (registered,) = torch._C._jit_get_schemas_for_operator(f"fastwin_C::{op}_{kind}")
        want = torch._C.parse_schema(f"fastwin_C::{op}_{kind}{schema}")
        assert [(a.name, str(a.type)) for a in registered.arguments] == \
            [(a.name, str(a.type)) for a in want.arguments], (kind, str(registered))
        assert len(registered.returns) == len(want.returns), (kind, str(registered))


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

    names = ["reference", "cpp" if "cpp" in FAST else "auto"]
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
