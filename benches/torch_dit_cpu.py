"""The DiT of `ims3-dit` written out in PyTorch, for the benchmarks' PyTorch sides
(`benches/torch_cpu.py` on the CPU, `benches/torch_gpu.py` on a GPU).

The network is the DiT of Peebles & Xie (adaLN-Zero blocks, learned sigma, fixed 2-D sin-cos
position embedding) with the Difffit scales IMS3 fine-tunes (qkv, attention projection, both residual branches),
the same shapes and operations as `ims3-dit`: timm-style attention through
`F.scaled_dot_product_attention`, tanh-approximated GELU, LayerNorm eps 1e-6 without affine.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x, shift, scale):
    # x [N, T, D]; shift, scale [N, D]
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t, dim, max_period=10000.0):
    # t [N] -> [N, dim]: cos half then sin half
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(dim, grid):
    # [grid*grid, dim]: first half embeds the row index's partner (w), second half h, as DiT
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    g = torch.arange(grid, dtype=torch.float64)
    ww, hh = torch.meshgrid(g, g, indexing="xy")
    return torch.cat([one_d(dim // 2, ww), one_d(dim // 2, hh)], dim=1).float()


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio, gammas):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * mlp_ratio)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.ada = nn.Linear(d, 6 * d)
        # Difffit scales (only in the first `--gamma-blocks` blocks): qkv output, attention
        # projection output, and the two residual branches
        self.gammas = gammas
        if gammas:
            self.gamma_qkv = nn.Parameter(torch.ones(3 * d))
            self.gamma_attn = nn.Parameter(torch.ones(d))
            self.gamma_1 = nn.Parameter(torch.ones(d))
            self.gamma_2 = nn.Parameter(torch.ones(d))

    def attn(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x)
        if self.gammas:
            qkv = qkv * self.gamma_qkv
        qkv = qkv.reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [N, H, T, D/H]
        o = self.proj(o.transpose(1, 2).reshape(n, t, d))
        return o * self.gamma_attn if self.gammas else o

    def forward(self, x, c):
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=1)
        h = g1.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh1, sc1))
        x = x + (h * self.gamma_1 if self.gammas else h)
        h = g2.unsqueeze(1) * self.fc2(F.gelu(self.fc1(modulate(self.norm2(x), sh2, sc2)), approximate="tanh"))
        return x + (h * self.gamma_2 if self.gammas else h)


class DiT(nn.Module):
    def __init__(self, input_size, patch, in_ch, d, depth, heads, mlp_ratio, classes, gamma_blocks):
        super().__init__()
        self.patch, self.in_ch, self.out_ch = patch, in_ch, 2 * in_ch
        self.x_embed = nn.Conv2d(in_ch, d, patch, stride=patch)
        self.t_fc1 = nn.Linear(256, d)
        self.t_fc2 = nn.Linear(d, d)
        self.y_table = nn.Embedding(classes + 1, d)
        grid = input_size // patch
        # fixed, but a Parameter as in DiT (counted, never trained)
        self.pos = nn.Parameter(sincos_2d(d, grid).unsqueeze(0), requires_grad=False)
        self.blocks = nn.ModuleList([Block(d, heads, mlp_ratio, i < gamma_blocks) for i in range(depth)])
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_linear = nn.Linear(d, patch * patch * self.out_ch)

    def forward(self, x, t, y):
        n, _, hh, ww = x.shape
        x = self.x_embed(x).flatten(2).transpose(1, 2) + self.pos  # [N, T, D]
        c = self.t_fc2(F.silu(self.t_fc1(timestep_embedding(t, 256)))) + self.y_table(y)  # [N, D]
        for b in self.blocks:
            x = b(x, c)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=1)
        x = self.final_linear(modulate(self.final_norm(x), shift, scale))  # [N, T, p*p*C_out]
        p, g = self.patch, hh // self.patch
        x = x.reshape(n, g, g, p, p, self.out_ch).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(n, self.out_ch, hh, ww)
