"""`torch.onnx.export(model, x, f)` with default settings on every available backend, checked in
onnxruntime against eager (SPEC §3). Skips without onnx / onnxscript / onnxruntime (the `test` extra).

On a fused backend the export runs the reference: fastwin's ops take the reference path while
`torch.onnx` / `torch.export` trace them, so the graph holds only standard ONNX operators.
"""
import warnings

import pytest
import torch

import fastwin
from tests.helpers import FAST, rel_err

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

# Export traces on the CPU; Triton runs there only interpreted (no graph to export through it).
BACKENDS = ["reference"] + [name for name in FAST if not (name == "triton" and not torch.cuda.is_available())]
MODELS = {
    # two stages: W-MSA and SW-MSA on a 16x16 map with window 7 (padded, shifted), patch merging
    "swin_tiny_patch4_window7_224": (dict(embed_dim=32, depths=(2, 1), num_heads=(1, 2)), 64),
    "swinv2_tiny_window8_256": (dict(embed_dim=32, depths=(2, 1), num_heads=(1, 2), window_size=6), 64),
    "uniformer_small": (dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16), 64),
    "deit_small_patch16_224": (dict(depth=2, embed_dim=64, num_heads=2), 48),
}


@pytest.fixture(scope="module")
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


CASES = [(name, backend) for name in MODELS for backend in BACKENDS
         if backend == "reference" or not name.startswith("swinv2")]  # V2 falls back the same way as V1


@pytest.mark.slow
@pytest.mark.parametrize("name,backend", CASES)
def test_default_onnx_export_matches_eager(name, backend, tmp_path, quiet):
    kwargs, size = MODELS[name]
    torch.manual_seed(0)
    model = fastwin.create_model(name, num_classes=10, **kwargs).eval()
    for m in model.modules():  # non-trivial norms (V2 starts its post-norms at zero)
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            torch.nn.init.normal_(m.weight, 1.0, 0.2)
            torch.nn.init.normal_(m.bias, 0.0, 0.2)
    x = torch.randn(2, 3, size, size)
    path = tmp_path / f"{name}.onnx"
    with fastwin.set_backend(backend, strict=backend != "reference"), torch.no_grad():
        want = model(x)
        torch.onnx.export(model, (x,), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert rel_err(torch.from_numpy(got), want) < 1e-4


def test_reference_window_ops_export_as_4d(tmp_path, quiet):
    """The reference itself (the CPU fallback) exports: masked, biased window attention with windows
    folded into the batch; no 5-D attention reaches the exporter."""
    import onnx

    class ShiftedWindows(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(169, 2))
            self.bias = torch.nn.Parameter(torch.randn(3 * 64))

        def forward(self, qkv):
            return fastwin.ops.shifted_window_attention(qkv, 2, 7, 3, self.table, self.bias)

    mod, qkv = ShiftedWindows().eval(), torch.randn(2, 10, 16, 3 * 64)
    path = tmp_path / "swa.onnx"
    with fastwin.set_backend("reference"), torch.no_grad():
        want = mod(qkv)
        torch.onnx.export(mod, (qkv,), str(path))
    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.domain not in ("", "ai.onnx")], "only standard operators"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: qkv.numpy()})[0]
    assert rel_err(torch.from_numpy(got), want) < 1e-5
