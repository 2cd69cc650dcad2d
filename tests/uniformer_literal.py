"""A literal, plain-PyTorch UniFormer (image classification) written from the paper's / official
repository's semantics, used as the independent specification in tests.

Deliberately naive: `nn.Conv2d(groups=dim)` for every depthwise conv, the attention matrix built
explicitly, NCHW everywhere, nothing from fastwin. Class and parameter names are the official ones
(`CBlock`, `SABlock`, `Attention`, `patch_embed1..4`, `blocks1..4`, ...), so fastwin's swap rules
see these modules exactly as they would see the official code.
"""
import torch
import torch.nn as nn


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class CMlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True, qk_scale=None):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B, N, 3, h, C // h)
        q = qkv[:, :, 0].transpose(1, 2)  # B, heads, N, d
        k = qkv[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale  # B, heads, N, N
        weights = torch.softmax(scores, dim=-1)
        out = torch.matmul(self.attn_drop(weights), v)  # B, heads, N, d
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class CBlock(nn.Module):
    def __init__(self, dim, mlp_ratio=4.0):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=1)
        self.attn = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim)
        self.drop_path = nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = CMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.pos_embed(x)
        y = self.norm1(x)
        y = self.conv1(y)
        y = self.attn(y)
        y = self.conv2(y)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class SABlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, layer_scale=False, qk_scale=None):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_scale=qk_scale)
        self.drop_path = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls = layer_scale
        if layer_scale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), 1e-6))
            self.gamma_2 = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        x = x + self.pos_embed(x)
        B, C, H, W = x.shape
        t = x.reshape(B, C, H * W).permute(0, 2, 1)  # B, N, C
        a = self.attn(self.norm1(t))
        t = t + self.drop_path(self.gamma_1 * a if self.ls else a)
        m = self.mlp(self.norm2(t))
        t = t + self.drop_path(self.gamma_2 * m if self.ls else m)
        return t.permute(0, 2, 1).reshape(B, C, H, W)


class PatchEmbed(nn.Module):
    def __init__(self, patch, cin, cout):
        super().__init__()
        self.norm = nn.LayerNorm(cout)  # default eps 1e-5 in the official patch stem
        self.proj = nn.Conv2d(cin, cout, kernel_size=patch, stride=patch)

    def forward(self, x):
        x = self.proj(x)
        B, C, H, W = x.shape
        t = self.norm(x.reshape(B, C, H * W).permute(0, 2, 1))
        return t.permute(0, 2, 1).reshape(B, C, H, W)


class head_embedding(nn.Module):  # noqa: N801  (official name)
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(cin, cout // 2, 3, stride=2, padding=1), nn.BatchNorm2d(cout // 2), nn.GELU(),
            nn.Conv2d(cout // 2, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return self.proj(x)


class middle_embedding(nn.Module):  # noqa: N801
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.proj(x)


class UniFormer(nn.Module):
    def __init__(self, depth, embed_dim=(64, 128, 320, 512), head_dim=64, num_classes=1000, conv_stem=False,
                 layer_scale=False, in_chans=3):
        super().__init__()
        dims = list(embed_dim)
        if conv_stem:
            self.patch_embed1 = head_embedding(in_chans, dims[0])
            self.patch_embed2 = middle_embedding(dims[0], dims[1])
            self.patch_embed3 = middle_embedding(dims[1], dims[2])
            self.patch_embed4 = middle_embedding(dims[2], dims[3])
        else:
            self.patch_embed1 = PatchEmbed(4, in_chans, dims[0])
            self.patch_embed2 = PatchEmbed(2, dims[0], dims[1])
            self.patch_embed3 = PatchEmbed(2, dims[1], dims[2])
            self.patch_embed4 = PatchEmbed(2, dims[2], dims[3])
        self.pos_drop = nn.Dropout(0.0)
        self.blocks1 = nn.ModuleList([CBlock(dims[0]) for _ in range(depth[0])])
        self.blocks2 = nn.ModuleList([CBlock(dims[1]) for _ in range(depth[1])])
        self.blocks3 = nn.ModuleList([SABlock(dims[2], dims[2] // head_dim, layer_scale=layer_scale)
                                      for _ in range(depth[2])])
        self.blocks4 = nn.ModuleList([SABlock(dims[3], dims[3] // head_dim, layer_scale=layer_scale)
                                      for _ in range(depth[3])])
        self.norm = nn.BatchNorm2d(dims[3])
        self.head = nn.Linear(dims[3], num_classes)

    def forward(self, x):
        x = self.pos_drop(self.patch_embed1(x))
        for i in range(1, 5):
            if i > 1:
                x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"blocks{i}"):
                x = blk(x)
        x = self.norm(x)
        pooled = x.mean(dim=(2, 3))
        return self.head(pooled)


VARIANTS = {
    "uniformer_small": dict(depth=(3, 4, 8, 3), head_dim=64),
    "uniformer_small_plus": dict(depth=(3, 5, 9, 3), head_dim=32, conv_stem=True),
    "uniformer_small_plus_dim64": dict(depth=(3, 5, 9, 3), head_dim=64, conv_stem=True),
    "uniformer_base": dict(depth=(5, 8, 20, 7), head_dim=64),
    "uniformer_base_ls": dict(depth=(5, 8, 20, 7), head_dim=64, layer_scale=True),
}
