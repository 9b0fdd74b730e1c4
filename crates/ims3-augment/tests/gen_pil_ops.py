"""Writes pil_ops.json: Pillow's output for each PIL operation the augmentations port.

Run from this folder: python3 gen_pil_ops.py  (Pillow 13.0.0 produced the committed file).
The affine matrices follow torchvision's _get_inverse_affine_matrix, as RandAugment calls it.
"""
import json, math
from PIL import Image, ImageEnhance, ImageOps

W, H = 9, 7
px = [((x * 37 + y * 11) % 256, (x * 13 + y * 71 + 5) % 256, (x * y * 29 + 40) % 256) for y in range(H) for x in range(W)]
img = Image.new("RGB", (W, H))
img.putdata(px)

def inv_affine(center, angle, translate, scale, shear):
    rot = math.radians(angle); sx = math.radians(shear[0]); sy = math.radians(shear[1])
    cx, cy = center; tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m = [v / scale for v in m]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx; m[5] += cy
    return m

def aff(m):
    return img.transform((W, H), Image.AFFINE, m, resample=Image.NEAREST)

out = {
    "width": W, "height": H, "input": list(img.tobytes()),
    "brightness_1.18": ImageEnhance.Brightness(img).enhance(1.18),
    "contrast_0.82": ImageEnhance.Contrast(img).enhance(0.82),
    "color_1.18": ImageEnhance.Color(img).enhance(1.18),
    "sharpness_0.82": ImageEnhance.Sharpness(img).enhance(0.82),
    "sharpness_1.18": ImageEnhance.Sharpness(img).enhance(1.18),
    "autocontrast": ImageOps.autocontrast(img),
    "equalize": ImageOps.equalize(img),
    "posterize_7": ImageOps.posterize(img, 7),
    "solarize_204": ImageOps.solarize(img, 204),
    "rotate_6": img.rotate(6.0, resample=Image.NEAREST),
    "rotate_-6": img.rotate(-6.0, resample=Image.NEAREST),
    "shearx_0.06": aff(inv_affine([0, 0], 0.0, [0, 0], 1.0, [math.degrees(math.atan(0.06)), 0.0])),
    "sheary_-0.06": aff(inv_affine([0, 0], 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(-0.06))])),
    "translatex_2": aff(inv_affine([W * 0.5, H * 0.5], 0.0, [2, 0], 1.0, [0.0, 0.0])),
    "translatey_-3": aff(inv_affine([W * 0.5, H * 0.5], 0.0, [0, -3], 1.0, [0.0, 0.0])),
    "resize_bilinear_5x4": img.resize((5, 4), Image.BILINEAR),
    "resize_bilinear_13x11": img.resize((13, 11), Image.BILINEAR),
}
for k, v in list(out.items()):
    if isinstance(v, Image.Image):
        out[k] = {"width": v.size[0], "height": v.size[1], "data": list(v.tobytes())}
json.dump(out, open("pil_ops.json", "w"))
