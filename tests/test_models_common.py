"""Every registered model: builds, runs forward + backward at a small size, has the common surface."""
import pytest
import torch

import fastwin

pytestmark = pytest.mark.usefixtures("one_thread")  # full-size models on 72 px inputs: thread hand-offs dominate

SPEC_NAMES = (
    [f"vit_{s}_patch16_224" for s in ("tiny", "small", "base", "large")]
    + [f"deit_{s}_patch16_224" for s in ("tiny", "small", "base")]
    + [f"deit_{s}_distilled_patch16_224" for s in ("tiny", "small", "base")]
    + ["vit_small_r26_s32_224"]
    + [f"swin_{s}_patch4_window7_224" for s in ("tiny", "small", "base")]
    + ["swin_base_patch4_window12_384", "swin_large_patch4_window7_224", "swin_large_patch4_window12_384"]
    + [f"uniformer_{s}" for s in ("small", "small_plus", "small_plus_dim64", "base", "base_ls")]
)


def small_size(name):
    if name.startswith("vit_small_r26"):
        return 64
    if name.startswith(("vit", "deit")):
        return 48  # 3x3 patches: position embeddings are interpolated
    return 64 if name.startswith("uniformer") else 72  # Swin: 18x18 map, padded windows


def test_every_spec_model_is_registered():
    missing = [n for n in SPEC_NAMES if n not in fastwin.list_models()]
    assert not missing, missing
    assert fastwin.list_models("swin_*") == sorted(n for n in SPEC_NAMES if n.startswith("swin"))


@pytest.mark.parametrize("name", [n if "tiny" in n or "small" in n else pytest.param(n, marks=pytest.mark.slow)
                                  for n in fastwin.list_models()])  # base / large sizes: seconds each
def test_model_forward_backward_and_surface(name):
    torch.manual_seed(0)
    model = fastwin.create_model(name, num_classes=7)
    size = small_size(name)
    x = torch.randn(2, 3, size, size)
    model.train()
    out = model(x)
    out = out[0] + out[1] if isinstance(out, tuple) else out  # DeiT distilled trains on two heads
    assert out.shape == (2, 7)
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter receives a gradient"
    assert all(torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        assert logits.shape == (2, 7)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
    model.set_grad_checkpointing(True)


def test_unknown_model():
    with pytest.raises(ValueError, match="did you mean"):
        fastwin.create_model("swin_tiny_patch4_window7")
