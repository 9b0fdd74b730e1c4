"""Known values for resize_bicubic_aa: PIL's antialiased BICUBIC on a float ("F") image.

Run: python3 crates/ims3-images/tests/pil_reference.py  (needs Pillow); the output is pasted
into resize.rs. torchvision's Resize(BICUBIC, antialias=True) on tensors follows PIL's kernel.
"""
import math
from PIL import Image

W, H = 9, 7
def v(y, x):
    return math.sin(0.7 * x + 0.3 * y) + 0.05 * x * y

img = Image.new("F", (W, H))
img.putdata([v(y, x) for y in range(H) for x in range(W)])
for (ow, oh) in [(4, 5), (15, 12), (9, 3)]:
    out = img.resize((ow, oh), Image.BICUBIC)
    vals = [out.getpixel((x, y)) for y in range(oh) for x in range(ow)]
    print(f"// {W}x{H} -> {ow}x{oh}")
    print("[" + ", ".join(f"{x:.7e}" for x in vals) + "]")
