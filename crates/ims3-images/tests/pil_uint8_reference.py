"""Known values for pil::resize and pil::center_crop_arr: PIL on an 8-bit RGB pattern.

Run: python3 crates/ims3-images/tests/pil_uint8_reference.py (needs Pillow and numpy); the
printed arrays are pasted into pil_uint8.rs.
"""
import numpy as np
from PIL import Image

def pattern(w, h):
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 37 + y * 11) % 256
    g = (x * x + 3 * y * y) % 256
    b = ((x ^ y) * 29) % 256
    return np.stack([r, g, b], -1).astype(np.uint8)

def center_crop_arr(pil_image, image_size):
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]

img = Image.fromarray(pattern(23, 17))
print("bicubic_11x7", list(np.array(img.resize((11, 7), Image.BICUBIC)).reshape(-1)))
print("bicubic_31x20", list(np.array(img.resize((31, 20), Image.BICUBIC)).reshape(-1)))
print("box_11x8", list(np.array(img.resize((11, 8), Image.BOX)).reshape(-1)))
big = Image.fromarray(pattern(53, 41))
print("center_crop_arr_8", list(center_crop_arr(big, 8).reshape(-1)))
print("center_crop_arr_16", list(center_crop_arr(big, 16).reshape(-1)))
