"""ONNX Runtime and OpenVINO runners for `fastwin bench` and benchmarks/cpu_report.py: what a CPU user
would otherwise deploy, timed on the ONNX export of the same model.

The model is exported once per (model, input shape) with `torch.onnx.export` default settings (fastwin's
ops run the reference while exporting, so the graph holds standard ONNX operators), then run with as
many intra-op threads as torch uses, fp32 (OpenVINO is told so: it would pick bf16 on CPUs that have
it), graph optimizations at their defaults. Each session's output is checked against eager before it
is timed. Both are optional: a runner that cannot exist here raises `RuntimeError("skipped: ...")`.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from typing import Callable, Dict, Sequence

import torch

RUNNERS = ("onnxruntime", "openvino")
MAX_REL_ERR = 1e-4  # fp32 graphs of the same model: anything larger is a different computation


def _export(model: torch.nn.Module, x: torch.Tensor, cache: Dict[tuple, str]) -> str:
    key = (id(model), tuple(x.shape))
    if key not in cache:
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(f"skipped: torch.onnx.export needs onnx and onnxscript ({exc})") from None
        path = os.path.join(tempfile.mkdtemp(prefix="fastwin-bench-"), "model.onnx")
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path)
        cache[key] = path
    return cache[key]


def _onnxruntime(path: str, threads: int) -> Callable:
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("skipped: onnxruntime is not installed (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _openvino(path: str, threads: int) -> Callable:
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeError("skipped: openvino is not installed (pip install openvino)") from None
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                                     "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: request.infer([x])[compiled.output(0)]


def exported_step(name: str, model: torch.nn.Module, images: Sequence[torch.Tensor], train: bool,
                  dtype: torch.dtype, cache: Dict[tuple, str]) -> Callable[[int], object]:
    """A closure running runner `name` ("onnxruntime" or "openvino") on `images[i % len(images)]`.

    Raises:
        RuntimeError("skipped: ..."): training, a dtype other than fp32, a non-CPU device, or the
            package is missing. RuntimeError: the session's output differs from eager.
    """
    if train:
        raise RuntimeError("skipped: inference only (an exported graph has no backward)")
    if dtype != torch.float32:
        raise RuntimeError("skipped: fp32 only")
    if images[0].device.type != "cpu":
        raise RuntimeError("skipped: CPU only")
    was_training = model.training
    model.eval()
    try:
        path = _export(model, images[0], cache)
        with torch.no_grad():
            want = model(images[0])
    finally:
        model.train(was_training)
    run = (_onnxruntime if name == "onnxruntime" else _openvino)(path, torch.get_num_threads())
    arrays = [im.numpy() for im in images]
    got = torch.from_numpy(run(arrays[0]))
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
    if not err <= MAX_REL_ERR:
        raise RuntimeError(f"{name} output differs from eager (max relative error {err:.2e})")
    return lambda i: run(arrays[i % len(arrays)])
