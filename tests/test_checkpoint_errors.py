"""`fastwin.load_checkpoint` on entries that fit by key and shape but cannot be copied as they are, and
on unreadable files (issue #12, item 6): a clear error naming the key or the file, model unchanged."""
import warnings

import pytest
import torch
import torch.nn as nn

import fastwin


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.BatchNorm1d(4))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _quantized(t):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated, and still turn up in old files
        return torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)


# Each bad entry is the *last* one the model copies, so a load that copies as it goes would already
# have overwritten every other tensor when it fails.
BAD = {
    "meta": ("2.running_var", lambda t: torch.empty_like(t, device="meta"), "on the meta device"),
    "sparse": ("2.running_var", lambda t: t.to_sparse(), "torch.sparse_coo tensor"),
    "quantized": ("2.running_var", _quantized, "quantized tensor"),
    "complex": ("2.running_var", lambda t: t.to(torch.complex64), r"complex values \(torch.complex64\)"),
    "int_for_float": ("2.running_var", lambda t: torch.randint(1, 5, t.shape), r"integer values \(torch.int64\)"),
    "float_for_int": ("2.num_batches_tracked", lambda t: torch.tensor(3.5), r"floating-point values \(torch.float32\)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_entry_that_cannot_be_copied_fails_cleanly_and_leaves_model_unchanged(case):
    key, make_bad, why = BAD[case]
    model = _model()
    before = _state(model)
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v + 1 for k, v in before.items()}
    sd[key] = make_bad(sd[key])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "discards the imaginary part" warning and silent load
        with pytest.raises(ValueError, match=rf"cannot be copied: {key.replace('.', '[.]')}: {why}"):
            fastwin.load_checkpoint(model, sd)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model was partly loaded"


def test_all_problems_are_listed_together():
    model = _model()
    sd = _state(model)
    sd["0.weight"] = sd["0.weight"].to_sparse()
    sd["1.bias"] = sd["1.bias"].to(torch.complex64)
    del sd["1.weight"]
    with pytest.raises(ValueError) as err:
        fastwin.load_checkpoint(model, sd)
    msg = str(err.value)
    assert "missing keys: 1.weight" in msg and "0.weight: torch.sparse_coo" in msg and "1.bias: complex" in msg


def test_float_widths_still_load():
    model = _model()
    sd = {k: v.half() if v.is_floating_point() else v for k, v in _state(model).items()}
    fastwin.load_checkpoint(model, sd)
    assert model[0].weight.dtype == torch.float32


def test_loading_into_a_meta_model_is_refused():
    with torch.device("meta"):
        model = _model()
    with pytest.raises(ValueError, match="model's tensor is on the meta device"):
        fastwin.load_checkpoint(model, _state(_model()))


@pytest.mark.parametrize("content,exc,match", [
    (b"", ValueError, r"checkpoint file '.*empty\.pth' is empty or truncated \(0 bytes\)"),
    (b"not a checkpoint", Exception, r"cannot read checkpoint file '.*empty\.pth'"),
])
def test_unreadable_file_names_the_file(tmp_path, content, exc, match):
    path = tmp_path / "empty.pth"
    path.write_bytes(content)
    with pytest.raises(exc, match=match):
        fastwin.load_checkpoint(_model(), path)


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(_model().state_dict(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(Exception, match=r"cut\.pth"):
        fastwin.load_checkpoint(_model(), str(path))
