"""NumPy oracle for IDC's tensor ColorJitter (misc/utils.py of snu-mllab/Efficient-Dataset-Condensation,
copied by MinimaxDiffusion and IMS3), written from the reference's formulas in float32:

    Grayscale:  gs[0] = R*0.299; gs[0] += 0.587*G; gs[0] += 0.114*B; gs[1] = gs[2] = gs[0]
    Brightness: img.lerp(zeros, a)
    Contrast:   img.lerp(full(mean(gs)), a)      mean over the whole 3xHxW grey tensor
    Saturation: img.lerp(gs, a)
    lerp(x, t, a) = x + a * (t - x)              (torch.lerp for |a| < 0.5)

with fixed factors and orders, so the Rust port is checked op by op. Writes
tests/data/idc_jitter.json. Run: python3 idc_jitter_reference.py (needs numpy).
"""
import json
import os

import numpy as np

rng = np.random.default_rng(7)
img = rng.random((3, 4, 5), dtype=np.float32)


def grey(x):
    g = x[0] * np.float32(0.299)
    g = g + np.float32(0.587) * x[1]
    g = g + np.float32(0.114) * x[2]
    return np.stack([g, g, g])


def lerp(x, t, a):
    a = np.float32(a)
    return (x + a * (t - x)).astype(np.float32)


def apply(x, ops):
    x = x.copy()
    for op, a in ops:
        if op == "brightness":
            x = lerp(x, np.zeros_like(x), a)
        elif op == "contrast":
            g = grey(x)
            x = lerp(x, np.full_like(x, g.mean(dtype=np.float32)), a)
        elif op == "saturation":
            x = lerp(x, grey(x), a)
    return x


cases = [
    [["brightness", 0.3]],
    [["contrast", -0.35]],
    [["saturation", 0.25]],
    [["saturation", -0.4], ["brightness", 0.1], ["contrast", 0.39]],
    [["contrast", 0.2], ["saturation", 0.33], ["brightness", -0.27]],
]
out = {
    "image": img.flatten().tolist(),
    "shape": list(img.shape),
    "cases": [{"ops": c, "expected": apply(img, c).flatten().tolist()} for c in cases],
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "idc_jitter.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"wrote {path}")
