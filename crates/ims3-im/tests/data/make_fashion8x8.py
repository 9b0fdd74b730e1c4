"""Writes fashion8x8.bin: the first 128 Fashion-MNIST training images with label < 4, cropped
to 24 x 24 (offset 2) and box-averaged 3 x 3 to 8 x 8, as 65-byte records (label, 64 pixels,
rounded to the nearest integer). Fashion-MNIST: Zalando Research, MIT licence.

    python3 make_fashion8x8.py /usr/share/datasets/fashion-mnist   (Debian's dataset-fashion-mnist)
"""
import gzip, sys

root = sys.argv[1]
images = gzip.open(f"{root}/train-images-idx3-ubyte.gz").read()[16:]
labels = gzip.open(f"{root}/train-labels-idx1-ubyte.gz").read()[8:]
out = bytearray()
n = 0
for i, label in enumerate(labels):
    if label >= 4:
        continue
    img = images[i * 784:(i + 1) * 784]
    out.append(label)
    for y in range(8):
        for x in range(8):
            s = sum(img[(2 + 3 * y + dy) * 28 + 2 + 3 * x + dx] for dy in range(3) for dx in range(3))
            out.append((2 * s + 9) // 18)  # round(s / 9), halves up
    n += 1
    if n == 128:
        break
open("fashion8x8.bin", "wb").write(bytes(out))
