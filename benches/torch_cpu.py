#!/usr/bin/env python3
"""IMS3's CPU workloads on PyTorch's CPU backend: the PyTorch side of `cargo xtask bench-cpu`.

Each workload is the computation `ims3-bench --workloads <name>` times, written out in PyTorch
at the same shapes (random weights; only the time is measured, plus the parameter counts that
the xtask compares with ims3's so both sides provably built the same network):

  dit_forward     DiT eval forward (benches/torch_dit_cpu.py's network)
  im_step         one IMS3 fine-tuning step (REFERENCE section 3): q_sample, the DiT forward with
                  label dropout, MSE + VB (IDDPM, learned-range variance, detached mean), the
                  posterior mean z1 with gradient, z2 from one clipped reverse-DDIM step of a
                  second, no-grad forward on the clean latent, the IM term over all B x B pairs,
                  Minimax's per-class memories (64 real and 64 predicted latents per class), the
                  backward, AdamW (lr 1e-3, wd 0, eps 1e-8) on the Difffit parameters (biases,
                  gammas, label table) and the EMA (0.9999) of those parameters (the EMA of a
                  frozen parameter is the parameter: ims3 skips it, and so does this side)
  sample_cfg50    DiT's p_sample_loop over 50 respaced steps with classifier-free guidance 4.0 on
                  the first 3 eps channels (2B forwards per step), clip_denoised False
  convnet_step    ConvNet-3 (width 128, instance norm, 28 px grey treated as 32): forward +
                  cross-entropy + backward + SGD (momentum 0.9, wd 5e-4): the Fashion-MNIST job's
                  evaluation step
  resnet_ap_step  IDC's ResNetAP-10 (instance norm) at 224 px: the same step (benches/torch_gpu.py's
                  network)

Prints one JSON object: first call, median, mean and min seconds of the timed calls, params.

  python benches/torch_cpu.py --workload im_step --hidden 384 --depth 12 --heads 6 --patch 2 \
      --input-size 16 --classes 1000 --batch 8 --threads 1 --iters 5 --warmup 2
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dit_cpu import DiT  # noqa: E402
from torch_gpu import ResNetAP10  # noqa: E402


# ---------------------------------------------------------------- IDDPM (REFERENCE section 2)
class Diffusion:
    """Linear betas 1e-4..0.02 over 1000 steps, optionally respaced to `use` (kept indices)."""

    def __init__(self, use=None):
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        acp = torch.cumprod(1 - betas, 0)
        self.timestep_map = list(range(1000))
        if use is not None:
            last, new = 1.0, []
            for i in use:
                new.append(1 - acp[i].item() / last)
                last = acp[i].item()
            betas = torch.tensor(new, dtype=torch.float64)
            acp = torch.cumprod(1 - betas, 0)
            self.timestep_map = list(use)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        nxt = torch.cat([acp[1:], torch.zeros(1, dtype=torch.float64)])
        pv = betas * (1 - prev) / (1 - acp)
        self.num = len(betas)
        self.sqrt_acp, self.sqrt_1m_acp = acp.sqrt(), (1 - acp).sqrt()
        self.sqrt_recip, self.sqrt_recipm1 = (1 / acp).sqrt(), (1 / acp - 1).sqrt()
        self.sqrt_acp_next, self.sqrt_1m_acp_next = nxt.sqrt(), (1 - nxt).sqrt()
        self.log_var_min = torch.log(torch.cat([pv[1:2], pv[1:]]))
        self.log_betas = betas.log()
        self.coef1 = betas * prev.sqrt() / (1 - acp)
        self.coef2 = (1 - prev) * (1 - betas).sqrt() / (1 - acp)

    @staticmethod
    def at(arr, t):
        return arr[t].float()[:, None, None, None]

    def q_sample(self, x0, t, noise):
        return self.at(self.sqrt_acp, t) * x0 + self.at(self.sqrt_1m_acp, t) * noise

    def posterior(self, x0, xt, t):
        return self.at(self.coef1, t) * x0 + self.at(self.coef2, t) * xt, self.at(self.log_var_min, t)

    def p_mean_variance(self, out, xt, t, clip):
        c = xt.shape[1]
        eps, v = out[:, :c], out[:, c:]
        frac = (v + 1) / 2
        log_var = frac * self.at(self.log_betas, t) + (1 - frac) * self.at(self.log_var_min, t)
        x0 = self.at(self.sqrt_recip, t) * xt - self.at(self.sqrt_recipm1, t) * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _ = self.posterior(x0, xt, t)
        return mean, log_var, x0

    def training_losses(self, out, x0, xt, t, noise):
        c = xt.shape[1]
        mse = ((noise - out[:, :c]) ** 2).mean((1, 2, 3))
        frozen = torch.cat([out[:, :c].detach(), out[:, c:]], 1)  # VB trains the variance only
        mean, log_var, _ = self.p_mean_variance(frozen, xt, t, False)
        true_mean, true_log_var = self.posterior(x0, xt, t)
        kl = 0.5 * (-1 + log_var - true_log_var + torch.exp(true_log_var - log_var) + (true_mean - mean) ** 2 * torch.exp(-log_var))
        kl = kl.mean((1, 2, 3)) / math.log(2)
        nll = -discretized_log_likelihood(x0, mean, 0.5 * log_var).mean((1, 2, 3)) / math.log(2)
        vb = torch.where(t == 0, nll, kl)
        return mse, vb


def discretized_log_likelihood(x, mean, log_scale):
    def cdf(v):
        return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    centered, inv = x - mean, torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv * (centered + 1 / 255)), cdf(inv * (centered - 1 / 255))
    log_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_1m_min = torch.log((1 - cdf_min).clamp(min=1e-12))
    mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_plus, torch.where(x > 0.999, log_1m_min, mid))


def space_timesteps(n, count):
    stride = (n - 1) / (count - 1)
    return sorted({round(i * stride) for i in range(count)})


# ---------------------------------------------------------------- the IMS3 step
def im_step_fn(a):
    c, s, b = a.in_channels, a.input_size, a.batch
    model = dit(a).train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith("bias") or "gamma" in name or name.startswith("y_table"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in trainable]
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0, eps=1e-8)
    diff = Diffusion()
    real_mem, pred_mem = {}, {}
    step = [0]

    def forward(x, t, y, drop):
        return model(x, t.float(), torch.where(drop, torch.full_like(y, a.classes), y))

    def run():
        k = step[0] = step[0] + 1
        x0, noise = torch.randn(b, c, s, s), torch.randn(b, c, s, s)
        y = torch.tensor([(i + k) % 10 for i in range(b)])
        t = torch.tensor([(i * 131 + k * 17) % 1000 for i in range(b)])
        drop_main = torch.tensor([(i + k) % 10 == 0 for i in range(b)])
        drop_rev = torch.tensor([(i + 2 * k) % 10 == 0 for i in range(b)])
        xt = diff.q_sample(x0, t, noise)
        out = forward(xt, t, y, drop_main)
        mse, vb = diff.training_losses(out, x0, xt, t, noise)
        total = (mse + vb).mean()
        z1, _, x0_hat = diff.p_mean_variance(out, xt, t, False)
        with torch.no_grad():  # z2: one reverse-DDIM step from the clean latent, clipped
            out2 = forward(x0, t, y, drop_rev)
            _, _, x0c = diff.p_mean_variance(out2, x0, t, True)
            eps = (diff.at(diff.sqrt_recip, t) * x0 - x0c) / diff.at(diff.sqrt_recipm1, t)
            z2 = x0c * diff.at(diff.sqrt_acp_next, t) + diff.at(diff.sqrt_1m_acp_next, t) * eps
        cos = F.normalize(z1.flatten(1), dim=1) @ F.normalize(z2.flatten(1), dim=1).T
        total = total + 1 - 0.002 * cos.mean()
        flat, real = x0_hat.flatten(1), x0.flatten(1)
        classes = sorted(set(y.tolist()))
        for cl in classes:  # Minimax: representativeness and diversity against the memories
            idx = (y == cl).nonzero().flatten()
            mine = flat[idx]
            if pred_mem.get(cl):
                def pcos(u, m):
                    m = torch.stack(m)
                    return (u @ m.T) / (u.norm(dim=1, keepdim=True) * m.norm(dim=1)[None])
                total = total + 0.002 * (1 - pcos(mine, real_mem[cl]).min()) / len(classes)
                total = total + 0.008 * pcos(mine, pred_mem[cl]).max() / len(classes)
            for mem, rows in ((real_mem, real[idx]), (pred_mem, mine.detach())):
                mem.setdefault(cl, []).extend(list(rows))
                del mem[cl][:-64]
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, trainable, 1 - 0.9999)

    return model, run, {"trainable_params": sum(p.numel() for p in trainable)}


def sample_cfg_fn(a):
    c, s, b = a.in_channels, a.input_size, a.batch
    model = dit(a).eval()
    diff = Diffusion(space_timesteps(1000, a.sample_steps))
    y = torch.tensor([(i * 37) % (a.classes - 1) for i in range(b)])
    y = torch.cat([y, torch.full_like(y, a.classes)])

    def run():
        z = torch.randn(b, c, s, s)
        x = torch.cat([z, z])
        with torch.inference_mode():
            for i in reversed(range(diff.num)):
                t = torch.full((2 * b,), i)
                out = model(x, torch.full((2 * b,), float(diff.timestep_map[i])), y)
                eps, rest = out[:, :3], out[:, 3:]
                cond, uncond = eps.split(b)
                half = uncond + 4.0 * (cond - uncond)
                out = torch.cat([torch.cat([half, half]), rest], 1)
                mean, log_var, _ = diff.p_mean_variance(out, x, t, False)
                noise = torch.randn_like(x) if i > 0 else torch.zeros_like(x)
                x = mean + torch.exp(0.5 * log_var) * noise

    return model, run, {}


# ---------------------------------------------------------------- classifiers
class ConvNet(nn.Module):
    """IDC's ConvNet: depth x [conv 3x3 -> GroupNorm(C, C) -> ReLU -> AvgPool 2], Linear."""

    def __init__(self, channels, classes, width=128, depth=3, im_size=28):
        super().__init__()
        layers, cin, side = [], channels, 32 if im_size == 28 else im_size
        for d in range(depth):
            pad = 3 if channels == 1 and im_size == 28 and d == 0 else 1
            layers += [nn.Conv2d(cin, width, 3, padding=pad), nn.GroupNorm(width, width), nn.ReLU(), nn.AvgPool2d(2, 2)]
            cin, side = width, side // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * side * side, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def sgd_step_fn(model, x, y):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def run():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return model, run, {}


def dit(a):
    m = DiT(a.input_size, a.patch, a.in_channels, a.hidden, a.depth, a.heads, 4.0, a.classes, a.gamma_blocks)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name != "pos":
                p.add_(torch.randn_like(p) * 0.02)
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", required=True, choices=["dit_forward", "im_step", "sample_cfg50", "convnet_step", "resnet_ap_step"])
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=16)
    ap.add_argument("--in-channels", type=int, default=4)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--gamma-blocks", type=int, default=14, help="blocks carrying Difffit scales (IMS3: 14)")
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    extra = {}
    if a.workload == "dit_forward":
        model = dit(a).eval()
        x = torch.randn(a.batch, a.in_channels, a.input_size, a.input_size)
        t = torch.tensor([float((i * 997) % 1000) for i in range(a.batch)])
        y = torch.tensor([(i * 37) % a.classes for i in range(a.batch)])

        def run():
            with torch.inference_mode():
                model(x, t, y)
    elif a.workload == "im_step":
        model, run, extra = im_step_fn(a)
    elif a.workload == "sample_cfg50":
        model, run, extra = sample_cfg_fn(a)
    elif a.workload == "convnet_step":
        model, run, extra = sgd_step_fn(ConvNet(1, 10), torch.randn(a.batch, 1, 28, 28), torch.tensor([i % 10 for i in range(a.batch)]))
    else:
        model, run, extra = sgd_step_fn(ResNetAP10(10), torch.randn(a.batch, 3, 224, 224), torch.tensor([i % 10 for i in range(a.batch)]))

    times, first = [], None
    for i in range(max(a.warmup, 1) + max(a.iters, 1)):
        s = time.perf_counter()
        run()
        dt = time.perf_counter() - s
        if i == 0:
            first = dt
        if i >= max(a.warmup, 1):
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({
        "framework": f"torch {torch.__version__} (CPU)",
        "workload": a.workload,
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "first_call_s": first,
        "iters": len(times),
        "median_s": med,
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "img_per_s": a.batch / med,
        "params": sum(p.numel() for p in model.parameters()),
        **extra,
    }))


if __name__ == "__main__":
    main()
