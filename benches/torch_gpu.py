#!/usr/bin/env python3
"""PyTorch side of the GPU benchmark: the same workloads as `ims3-bench` at the same shapes, on
the same GPU in the same run (benches/gpu.sh), so every ratio compares like with like.

Workloads (random weights; timings with CUDA events after warm-up; median of the timed calls):
  dit_forward     DiT-XL/2 (depth 28, hidden 1152, 16 heads, patch 2; benches/torch_dit_cpu.py's
                  network) forward on 4x32x32 latents, batch 64, eval mode, SDPA attention
  vae_decode      the SD-VAE decoder (post_quant_conv + decoder of diffusers' AutoencoderKL,
                  block channels 128/256/512/512, 2+1 resnets per up block, one mid attention),
                  4x32x32 -> 3x256x256, batch 8
  resnet_ap_step  IDC's ResNetAP-10 with instance norm (GroupNorm(C, C)), 224 px, batch 64:
                  forward + cross-entropy + backward + SGD(momentum 0.9, wd 5e-4)

Each in three precisions where it applies: fp32 (TF32 off everywhere), tf32 (TF32 matmuls and
convolutions: PyTorch's default for convolutions, the reference's setting for matmuls) and bf16
(autocast for the DiT forward and the step, as the anchors; weights and inputs cast for the
VAE decoder).

  python3 benches/torch_gpu.py --out torch-h200.json [--iters 10]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# DiT-XL/2 with IMS3's Difffit scales: the network `cargo xtask bench-cpu` times on the CPU.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dit_cpu import DiT  # noqa: E402


# ---------------------------------------------------------------- SD-VAE decoder (diffusers)
class Resnet(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = nn.GroupNorm(32, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, 1, 1)
        self.short = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.short(x) + h


class MidAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.q, self.k, self.v, self.o = (nn.Linear(c, c) for _ in range(4))

    def forward(self, x):
        n, c, h, w = x.shape
        t = self.norm(x).reshape(n, c, h * w).transpose(1, 2)
        o = F.scaled_dot_product_attention(self.q(t)[:, None], self.k(t)[:, None], self.v(t)[:, None])[:, 0]
        return x + self.o(o).transpose(1, 2).reshape(n, c, h, w)


class VaeDecoder(nn.Module):
    def __init__(self, channels=(128, 256, 512, 512), layers=2, latent=4):
        super().__init__()
        rev = list(reversed(channels))
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)
        self.conv_in = nn.Conv2d(latent, rev[0], 3, 1, 1)
        self.mid = nn.ModuleList([Resnet(rev[0], rev[0]), MidAttention(rev[0]), Resnet(rev[0], rev[0])])
        self.ups = nn.ModuleList()
        cin = rev[0]
        for i, c in enumerate(rev):
            blocks = nn.ModuleList([Resnet(cin if j == 0 else c, c) for j in range(layers + 1)])
            up = nn.Conv2d(c, c, 3, 1, 1) if i < len(rev) - 1 else None
            self.ups.append(nn.ModuleDict({"resnets": blocks, **({"up": up} if up is not None else {})}))
            cin = c
        self.norm_out, self.conv_out = nn.GroupNorm(32, rev[-1], eps=1e-6), nn.Conv2d(rev[-1], 3, 3, 1, 1)

    def forward(self, z):
        x = self.conv_in(self.post_quant_conv(z))
        for m in self.mid:
            x = m(x)
        for blk in self.ups:
            for r in blk["resnets"]:
                x = r(x)
            if "up" in blk:
                x = blk["up"](F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(x)))


# ---------------------------------------------------------------- IDC ResNetAP-10 (instance norm)
class BasicBlockAP(nn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, 1, 1, bias=False), nn.GroupNorm(c, c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(c, c)
        self.pool = nn.AvgPool2d(stride) if stride != 1 else nn.Identity()
        self.down = (
            nn.Sequential(nn.Conv2d(cin, c, 1, bias=False), nn.AvgPool2d(stride), nn.GroupNorm(c, c))
            if stride != 1 or cin != c else nn.Identity()
        )

    def forward(self, x):
        out = self.pool(F.relu(self.bn1(self.conv1(x))))
        return F.relu(self.bn2(self.conv2(out)) + self.down(x))


class ResNetAP10(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1, self.bn1, self.pool = nn.Conv2d(3, 64, 7, 1, 3, bias=False), nn.GroupNorm(64, 64), nn.AvgPool2d(4)
        self.layers = nn.Sequential(BasicBlockAP(64, 64, 1), BasicBlockAP(64, 128, 2), BasicBlockAP(128, 256, 2), BasicBlockAP(256, 512, 2))
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.pool(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


# ---------------------------------------------------------------- timing
def precision(p):
    tf32 = p != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def timed(fn, warmup, iters):
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1000)
    times.sort()
    return first, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workloads", default="dit_forward,vae_decode,resnet_ap_step")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    records = []

    def rec(workload, prec, batch, first, times, note):
        med = times[len(times) // 2]
        r = {"workload": workload, "precision": prec, "batch": batch, "first_call_s": first, "iters": len(times),
             "median_s": med, "min_s": times[0], "img_per_s": batch / med,
             "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "note": note}
        print(json.dumps(r), flush=True)
        records.append(r)
        with open(a.out, "w") as f:
            json.dump({"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                       "gpu": torch.cuda.get_device_name(0), "records": records}, f, indent=1)

    for w in a.workloads.split(","):
        for prec in ("fp32", "tf32", "bf16"):
            precision(prec)
            torch.cuda.reset_peak_memory_stats()
            dt = torch.bfloat16 if prec == "bf16" else torch.float32
            if w == "dit_forward":
                b = 64
                with dev:
                    m = DiT(32, 2, 4, 1152, 28, 16, 4.0, 1000, 14).eval()
                x = torch.randn(b, 4, 32, 32, device=dev)
                t = torch.randint(0, 1000, (b,), device=dev).float()
                y = torch.randint(0, 1000, (b,), device=dev)
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    first, times = timed(lambda: m(x, t, y), a.warmup, a.iters)
                rec(w, prec, b, first, times, "DiT-XL/2 (Difffit scales in 14 blocks) eval forward, 4x32x32 latents, SDPA" + (", autocast bf16" if prec == "bf16" else ""))
            elif w == "vae_decode":
                b = 8
                with dev:
                    m = VaeDecoder().eval().to(dt)
                z = torch.randn(b, 4, 32, 32, device=dev, dtype=dt)
                with torch.no_grad():
                    first, times = timed(lambda: m(z), a.warmup, a.iters)
                rec(w, prec, b, first, times, "post_quant_conv + decoder, 4x32x32 -> 3x256x256")
            elif w == "resnet_ap_step":
                b = 64
                with dev:
                    m = ResNetAP10().train()
                opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                x = torch.randn(b, 3, 224, 224, device=dev)
                y = torch.randint(0, 10, (b,), device=dev)

                def step():
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=prec == "bf16"):
                        loss = F.cross_entropy(m(x), y)
                    loss.backward()
                    opt.step()

                first, times = timed(step, a.warmup, a.iters)
                rec(w, prec, b, first, times, "forward + CE + backward + SGD(0.9, wd 5e-4), 224 px" + (", autocast bf16" if prec == "bf16" else ""))
            del m
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
