"""DeiT (plain and distilled) against the literal model, and the distillation loss against hand math."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import vit_literal as lit

import fastwin
from fastwin.losses import DistillationLoss
from fastwin.models.deit import VisionTransformerDistilled
from tests.helpers import randomize, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
REAL = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}



def _pair():
    ref = randomize(lit.VisionTransformer(num_classes=6, distilled=True, **SMALL))
    model = fastwin.create_model("deit_small_distilled_patch16_224", num_classes=6, **SMALL)
    fastwin.load_checkpoint(model, ref.state_dict())
    return model, ref


@pytest.mark.parametrize("size", sorted(REAL))
@pytest.mark.parametrize("distilled", [False, True])
def test_real_config_state_dicts(size, distilled):
    dim, heads = REAL[size]
    name = f"deit_{size}_{'distilled_' if distilled else ''}patch16_224"
    with torch.device("meta"):
        ours = fastwin.create_model(name).state_dict()
        ref = lit.VisionTransformer(embed_dim=dim, depth=12, num_heads=heads, distilled=distilled).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    if distilled:
        assert tuple(ours["pos_embed"].shape) == (1, 14 * 14 + 2, dim) and "head_dist.weight" in ours


def test_distilled_train_and_eval_outputs():
    model, ref = _pair()
    x = torch.randn(3, 3, 32, 32)
    model.train(), ref.train()
    cls_logits, dist_logits = model(x)
    want_cls, want_dist = ref(x)
    assert rel_err(cls_logits, want_cls) < 1e-5 and rel_err(dist_logits, want_dist) < 1e-5
    assert not torch.allclose(cls_logits, dist_logits)  # two different heads on two different tokens
    model.eval(), ref.eval()
    out = model(x)
    assert rel_err(out, ref(x)) < 1e-5
    assert torch.allclose(out, (cls_logits + dist_logits) / 2, atol=1e-5)
    feats = model.forward_features(x)
    assert torch.allclose(model.forward_head(feats, pre_logits=True), (feats[:, 0] + feats[:, 1]) / 2)
    model.train()
    model.set_distilled_training(False)  # timm's switch: training without a teacher returns the mean
    assert torch.allclose(model(x), out, atol=1e-5)


def test_distilled_other_size_and_checkpoint_resample(tmp_path):
    model, ref = _pair()
    model.eval(), ref.eval()
    x = torch.randn(1, 3, 48, 40)
    assert rel_err(model(x), ref(x)) < 1e-5  # both prefix tokens keep their embeddings
    torch.save({"model": ref.state_dict()}, tmp_path / "deit.pth")
    big = fastwin.create_model("deit_small_distilled_patch16_224", num_classes=6, checkpoint=str(tmp_path / "deit.pth"),
                               **dict(SMALL, img_size=48)).eval()
    assert torch.equal(big.pos_embed[:, :2], ref.pos_embed[:, :2])
    y = torch.randn(1, 3, 48, 48)
    assert rel_err(big(y), ref(y)) < 1e-5


def test_plain_deit_is_vit_and_swap():
    ref = randomize(lit.VisionTransformer(num_classes=6, distilled=True, **SMALL)).eval()
    x = torch.randn(2, 3, 32, 32)
    want = ref(x)
    _, report = fastwin.swap(ref)
    assert report.counts() == {"Attention": 2}
    assert rel_err(ref(x), want) < 1e-5
    plain = fastwin.create_model("deit_tiny_patch16_224", num_classes=0, **SMALL)
    assert not isinstance(plain, VisionTransformerDistilled) and plain(x).shape == (2, 64)


def test_distilled_rejects_pooling_and_bad_checkpoint():
    with pytest.raises(ValueError, match="token"):
        VisionTransformerDistilled(global_pool="avg", **SMALL)
    model, ref = _pair()
    sd = ref.state_dict()
    sd.pop("dist_token")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="dist_token"):
        fastwin.load_checkpoint(model, sd)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.reset_classifier(3)
    model.train()
    a, b = model(torch.randn(2, 3, 32, 32))
    assert a.shape == b.shape == (2, 3)


# -- DistillationLoss -----------------------------------------------------------------------------------


class _Teacher(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.calls = 0

    def forward(self, inputs):
        self.calls += 1
        return self.logits


def _setup(B=4, C=5):
    g = torch.Generator().manual_seed(1)
    cls = torch.randn(B, C, generator=g, requires_grad=True)
    dist = torch.randn(B, C, generator=g, requires_grad=True)
    teacher = torch.randn(B, C, generator=g) * 2
    labels = torch.randint(0, C, (B,), generator=g)
    return cls, dist, teacher, labels


def _ce(logits, labels):
    """Cross entropy by hand: mean over the batch of -log softmax at the label."""
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        total += lse - row[y]
    return total / len(labels)


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def test_distillation_loss_none():
    cls, dist, teacher, labels = _setup()
    t = _Teacher(teacher)
    loss = DistillationLoss(nn.CrossEntropyLoss(), t, "none", alpha=0.5, tau=1.0)
    assert loss(None, (cls, dist), labels).item() == pytest.approx(_ce(cls, labels), rel=1e-6)
    assert loss(None, cls, labels).item() == pytest.approx(_ce(cls, labels), rel=1e-6)
    assert t.calls == 0  # no teacher forward without distillation


@pytest.mark.parametrize("alpha,tau", [(0.5, 1.0), (0.3, 3.0)])
def test_distillation_loss_soft(alpha, tau):
    cls, dist, teacher, labels = _setup()
    loss = DistillationLoss(nn.CrossEntropyLoss(), _Teacher(teacher), "soft", alpha=alpha, tau=tau)
    got = loss(torch.zeros(1), (cls, dist), labels)
    kl = 0.0
    for s_row, t_row in zip((dist / tau).tolist(), (teacher / tau).tolist()):
        ps, pt = _softmax(s_row), _softmax(t_row)
        kl += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
    soft = kl * tau * tau / dist.numel()  # DeiT: summed KL over B * C entries
    want = (1 - alpha) * _ce(cls, labels) + alpha * soft
    assert got.item() == pytest.approx(want, rel=1e-5)
    got.backward()
    assert dist.grad.abs().sum() > 0 and cls.grad.abs().sum() > 0


def test_distillation_loss_hard():
    cls, dist, teacher, labels = _setup()
    loss = DistillationLoss(nn.CrossEntropyLoss(), _Teacher(teacher), "hard", alpha=0.25, tau=1.0)
    want = 0.75 * _ce(cls, labels) + 0.25 * _ce(dist, teacher.argmax(1))
    assert loss(torch.zeros(1), (cls, dist), labels).item() == pytest.approx(want, rel=1e-6)


def test_distillation_loss_with_model_and_errors():
    model, _ = _pair()
    teacher = fastwin.create_model("vit_tiny_patch16_224", num_classes=6, **SMALL).eval()
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 4])
    model.train()
    loss = DistillationLoss(nn.CrossEntropyLoss(), teacher, "hard", alpha=0.5, tau=1.0)(x, model(x), labels)
    loss.backward()
    assert model.dist_token.grad is not None and all(p.grad is None for p in teacher.parameters())
    crit = DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", alpha=0.5, tau=2.0)
    with pytest.raises(ValueError, match="dist_logits"):
        crit(x, torch.randn(2, 6), labels)
    with pytest.raises(ValueError, match="distillation_type"):
        DistillationLoss(nn.CrossEntropyLoss(), teacher, "medium", 0.5, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", 1.5, 1.0)
    with pytest.raises(ValueError, match="tau"):
        DistillationLoss(nn.CrossEntropyLoss(), teacher, "soft", 0.5, 0.0)
    with pytest.raises(ValueError, match="teacher"):
        DistillationLoss(nn.CrossEntropyLoss(), None, "hard", 0.5, 1.0)
