"""Write the letters set of this benchmark: A–J (a class each) drawn in the machine's TrueType fonts, 28 px, light
on black, like notMNIST, as a labelled folder (one subfolder per letter) that ``--dataset folder:OUT`` reads.

Each image: one of the fonts under /usr/share/fonts/truetype (DejaVu and Liberation here: 37 faces, regular, bold,
italic, condensed, serif, sans, mono), a size of 64–91 px on a 112 px canvas, a brightness of 200–255, a rotation of
±12° and a shift of ±8 px, then an antialiased shrink to 28 px. Seeded: the same fonts give the same images.

    python benchmarks/presets-letters28/make_letters.py /tmp/letters28 200
"""
import glob
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CANVAS = 112


def main(out: str, per_class: int) -> None:
    fonts = sorted(f for f in glob.glob("/usr/share/fonts/truetype/**/*.ttf", recursive=True) if "Math" not in f)
    if not fonts:
        sys.exit("error: no TrueType fonts under /usr/share/fonts/truetype")
    rng = np.random.default_rng(0)
    for letter in "ABCDEFGHIJ":
        os.makedirs(f"{out}/{letter}", exist_ok=True)
        for i in range(per_class):
            font = ImageFont.truetype(fonts[rng.integers(len(fonts))], int(rng.integers(64, 92)))
            canvas = Image.new("L", (CANVAS, CANVAS), 0)
            draw = ImageDraw.Draw(canvas)
            left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
            draw.text(((CANVAS - (right - left)) / 2 - left, (CANVAS - (bottom - top)) / 2 - top), letter,
                      fill=int(rng.integers(200, 256)), font=font)
            canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
            dx, dy = rng.integers(-8, 9, size=2)
            canvas = canvas.transform((CANVAS, CANVAS), Image.AFFINE, (1, 0, int(dx), 0, 1, int(dy)))
            canvas.resize((28, 28), Image.LANCZOS).save(f"{out}/{letter}/{i:04d}.png")
    print(f"{10 * per_class} images from {len(fonts)} fonts in {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)
