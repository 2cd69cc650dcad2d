"""timm's optimizer helpers on fastwin models: `no_weight_decay()` and `group_matcher()` give the same
parameter groups (weight decay and layer-wise LR scale) as on timm's own models with the same weights."""
import pytest
from timm_compat import require_timm

import fastwin
from fastwin.models.checkpoint import DERIVED_BUFFERS, _filter_for

SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5)
VIT = dict(depth=3, embed_dim=32, num_heads=2, num_classes=5)
CASES = [
    ("swin_tiny_patch4_window7_224", SWIN),
    ("swinv2_tiny_window8_256", dict(SWIN, window_size=8)),
    ("vit_small_patch16_224", VIT),
    ("vit_small_patch16_224", dict(VIT, global_pool="avg")),
    ("deit_tiny_distilled_patch16_224", VIT),
    ("vit_small_r26_s32_224", dict(VIT, depth=1)),
]


def _models(timm, name, kw):
    """timm's model, fastwin's with the same weights, and timm name -> fastwin name."""
    ref = timm.create_model(name, pretrained=False, **kw)
    model = fastwin.create_model(name, **kw)
    sd = {k: v for k, v in ref.state_dict().items() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS}
    fn = _filter_for(model)
    mapped = fn(dict(sd), model) if fn else sd
    rename = dict(zip(sd, mapped))  # the filters rename keys in order
    fastwin.load_checkpoint(model, mapped)
    return ref, model, rename


def _groups(model, groups, rename=None):
    """param groups -> sorted (lr_scale, weight_decay, parameter names) with names mapped to fastwin's."""
    names = {id(p): n for n, p in model.named_parameters()}
    rename = rename or {}
    out = []
    for g in groups:
        params = tuple(sorted(rename.get(names[id(p)], names[id(p)]) for p in g["params"]))
        out.append((round(g.get("lr_scale", 1.0), 9), g["weight_decay"], params))
    return sorted(out)


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_layer_decay_groups_equal_timm(name, kw):
    timm = require_timm()
    from timm.optim import param_groups_layer_decay

    ref, model, rename = _models(timm, name, kw)
    # timm's Swin V2 lists module names as no_weight_decay, which match no parameter; fastwin lists the
    # parameters the official training excludes (tested below), so compare the layer grouping alone there.
    nwd = (lambda m: ()) if name.startswith("swinv2") else (lambda m: m.no_weight_decay())
    theirs = param_groups_layer_decay(ref, weight_decay=0.05, no_weight_decay_list=nwd(ref), layer_decay=0.7)
    ours = param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=nwd(model), layer_decay=0.7)
    assert len(ours) > 4, "layer-wise decay forms groups"
    assert _groups(model, ours) == _groups(ref, theirs, rename)


@pytest.mark.parametrize("name,kw", CASES[:3], ids=[n for n, _ in CASES[:3]])
def test_create_optimizer_v2_equals_timm(name, kw):
    timm = require_timm()
    from timm.optim import create_optimizer_v2

    ref, model, rename = _models(timm, name, kw)
    for extra in (dict(), dict(layer_decay=0.75)):
        theirs = create_optimizer_v2(ref, "adamw", lr=1e-3, weight_decay=0.05, **extra)
        ours = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, **extra)
        if name.startswith("swinv2"):
            decayed = {n for g in _groups(model, ours.param_groups) if g[1] == 0 for n in g[2]}
            assert any("cpb_mlp" in n for n in decayed) and any("logit_scale" in n for n in decayed)
            continue
        assert _groups(model, ours.param_groups) == _groups(ref, theirs.param_groups, rename)


def test_no_weight_decay_names_the_parameters_timm_excludes():
    """The parameters the issue found decayed: bias tables, position embeddings, class tokens."""
    require_timm()
    from timm.optim import param_groups_weight_decay

    cases = [("swin_tiny_patch4_window7_224", SWIN, "relative_position_bias_table"),
             ("deit_tiny_distilled_patch16_224", VIT, "pos_embed"),
             ("deit_tiny_distilled_patch16_224", VIT, "cls_token"),
             ("deit_tiny_distilled_patch16_224", VIT, "dist_token"),
             ("swinv2_tiny_window8_256", dict(SWIN, window_size=8), "cpb_mlp"),
             ("swinv2_tiny_window8_256", dict(SWIN, window_size=8), "logit_scale")]
    for name, kw, part in cases:
        model = fastwin.create_model(name, **kw)
        groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
        no_decay = {n for g in _groups(model, groups) if g[1] == 0 for n in g[2]}
        wanted = {n for n, _ in model.named_parameters() if part in n}
        assert wanted and wanted <= no_decay, (name, part)


def test_uniformer_layer_decay_groups():
    """No timm UniFormer to compare with: the stem, each stage's patch embedding with its first block,
    every block, and the final norm with the last block, in depth order."""
    require_timm()
    from timm.optim import param_groups_layer_decay

    model = fastwin.create_model("uniformer_small", depth=(1, 2, 1, 1), embed_dim=(16, 32, 64, 128), head_dim=16)
    groups = param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(),
                                      layer_decay=0.5)
    scale = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            scale[names[id(p)]] = g["lr_scale"]
    order = ["patch_embed1.proj.weight", "blocks1.0.conv1.weight", "patch_embed2.proj.weight", "blocks2.1.conv1.weight",
             "blocks3.0.attn.qkv.weight", "blocks4.0.attn.qkv.weight", "head.weight"]
    assert [scale[n] for n in order] == sorted(scale[n] for n in order)
    assert scale["patch_embed2.proj.weight"] == scale["blocks2.0.conv1.weight"]
    assert scale["norm.weight"] == scale["blocks4.0.mlp.fc1.weight"]
    assert scale["head.weight"] == 1.0 and scale["patch_embed1.proj.weight"] == 0.5 ** 6
    assert len({round(s, 9) for s in scale.values()}) == 7  # stem, 5 blocks, head
