"""Small pictures of a dataset's images: RGB conversion, thumbnails, contact sheets (grids with captions and
outlines) and PNG encoding. Pure numpy + Pillow, so the pages and the exporter share one way of drawing images.

Examples:
    >>> digits = np.zeros((23, 8, 8, 1), dtype=np.uint8)
    >>> contact_sheet(digits, n_cols=10, cell=32).shape      # 3 rows of 10 cells of 32×32
    (96, 320, 3)
"""
from __future__ import annotations

import base64
import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = 255
BORDER = 3  # pixels of the outline frame; images keep clear of it whether or not a cell is outlined
CAPTION_COLOUR = (40, 40, 40)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An H×W×3 uint8 copy of a gray (H×W or H×W×1), RGB or RGBA (alpha dropped) uint8 image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"an image must be H×W, H×W×1, H×W×3 or H×W×4, got shape {image.shape}")
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def upscale(image: np.ndarray, min_side: int = 64) -> np.ndarray:
    """Repeat every pixel by the smallest whole factor that makes the shorter side at least ``min_side``.

    Nearest-neighbour keeps an 8×8 digit's pixels sharp instead of blurring them; images already that large are
    returned unchanged.
    """
    height, width = image.shape[:2]
    factor = max(1, -(-min_side // max(1, min(height, width))))
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """An H×W×3 image whose longer side fits in ``size``: small images grow by a whole factor (nearest
    neighbour), large ones shrink smoothly; the aspect ratio is kept."""
    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    longer = max(height, width)
    if longer <= size:
        factor = size // longer
        return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb
    scale = size / longer
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(new_size, Image.Resampling.LANCZOS))


CAPTION_SIZE = 10
# the fonts captions are drawn in, first to last: a caption takes the first that has a glyph for each of its
# characters. File names in any script should read as written, so after a font for Latin, Greek and Cyrillic come
# fonts for Chinese, Japanese and Korean; Pillow finds a name in the system's font folders (Linux, macOS, Windows).
# Pillow's own font (Latin letters without accents) is the last resort: a missing glyph draws as a box.
CAPTION_FONTS = ("DejaVuSans.ttf", "NotoSans-Regular.ttf", "Arial.ttf", "arial.ttf",
                 "NotoSansCJK-Regular.ttc", "wqy-microhei.ttc", "wqy-zenhei.ttc", "DroidSansFallbackFull.ttf",
                 "ipaexg.ttf", "Arial Unicode.ttf", "msyh.ttc", "YuGothR.ttc")


@lru_cache(maxsize=1)
def _caption_fonts() -> tuple[ImageFont.FreeTypeFont, ...]:
    fonts = []
    for name in CAPTION_FONTS:
        try:
            fonts.append(ImageFont.truetype(name, CAPTION_SIZE))
        except OSError:  # not installed here
            continue
    return (*fonts, ImageFont.load_default(CAPTION_SIZE))


def _drawn(font: ImageFont.FreeTypeFont, character: str) -> bytes:
    picture = Image.new("L", (2 * CAPTION_SIZE, 2 * CAPTION_SIZE))
    ImageDraw.Draw(picture).text((0, 0), character, font=font, fill=255)
    return picture.tobytes()


@lru_cache(maxsize=4096)
def has_glyph(font: ImageFont.FreeTypeFont, character: str) -> bool:
    """Whether ``font`` draws ``character`` as itself, not as its missing-glyph box."""
    if character.isspace():
        return True
    return _drawn(font, character) != _drawn(font, "\U0010ffff")  # a non-character: no font has it


def caption_font(text: str) -> ImageFont.FreeTypeFont:
    """The first of :data:`CAPTION_FONTS` found here that draws every character of ``text``, else the first found."""
    fonts = _caption_fonts()
    if text.isascii():
        return fonts[0]
    return next((font for font in fonts if all(has_glyph(font, c) for c in set(text))), fonts[0])


def _caption_height() -> int:
    return max(int(font.getbbox("Ag")[3]) for font in _caption_fonts()) + 4


def _fit_text(text: str, width: int) -> str:
    """``text`` shortened with "..." until it fits ``width`` pixels in its caption font. A file name (a text with
    "/" or ".") keeps its end, which tells ``cat/0021.jpg`` from ``cat/0022.jpg``; other text keeps its start."""
    font = caption_font(text)
    if font.getlength(text) <= width:
        return text
    keep_end = "/" in text or "." in text
    while text and font.getlength("..." + text if keep_end else text + "...") > width:
        text = text[1:] if keep_end else text[:-1]
    return ("..." + text if keep_end else text + "...") if text else ""


def contact_sheet(images: np.ndarray, n_cols: int = 10, cell: int = 64, captions: list[str] | None = None,
                  outline: list[bool] | None = None, outline_rgb: tuple[int, int, int] = (220, 30, 30)
                  ) -> np.ndarray:
    """A grid of images as one H×W×3 uint8 picture, filled row by row.

    Every cell is ``cell`` × ``cell`` pixels with the image centred in it (scaled as :func:`thumbnail` does to
    fit inside a ``BORDER``-pixel margin); with ``captions`` each cell gets its caption under it, one text line
    per ``"\\n"``-separated part (every cell as tall as the longest caption), each cut to the cell's width. Cells whose
    ``outline`` entry is true get an ``outline_rgb`` frame in that margin (the Neighbours page marks neighbours
    with another label this way). The sheet is ``min(n_cols, N)`` cells wide and ``ceil(N / n_cols)`` tall; no
    image gives one blank cell, so an empty cluster still has a sheet.

    Raises:
        ValueError: images are not uint8 N×H×W×C, or ``captions``/``outline`` do not have one entry per image.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N×H×W×C, got {images.dtype} {images.shape}")
    if n_cols < 1:
        raise ValueError(f"n_cols must be at least 1, got {n_cols}")
    if cell <= 2 * BORDER:
        raise ValueError(f"cell must be more than {2 * BORDER} pixels, got {cell}")
    count = len(images)
    for name, values in (("captions", captions), ("outline", outline)):
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} images")

    cols = min(n_cols, max(count, 1))
    rows = max(1, -(-count // n_cols))
    n_lines = max((str(caption).count("\n") + 1 for caption in captions), default=1) if captions is not None else 0
    line_h = _caption_height()
    caption_h = line_h * n_lines
    cell_h = cell + caption_h
    sheet = np.full((rows * cell_h, cols * cell, 3), BACKGROUND, dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = (i // cols) * cell_h, (i % cols) * cell
        thumb = thumbnail(image, cell - 2 * BORDER)
        y = top + (cell - thumb.shape[0]) // 2
        x = left + (cell - thumb.shape[1]) // 2
        sheet[y:y + thumb.shape[0], x:x + thumb.shape[1]] = thumb
        if outline is not None and outline[i]:
            frame = sheet[top:top + cell, left:left + cell]
            frame[:BORDER], frame[-BORDER:] = outline_rgb, outline_rgb
            frame[:, :BORDER], frame[:, -BORDER:] = outline_rgb, outline_rgb

    if captions is not None and count:
        picture = Image.fromarray(sheet)
        draw = ImageDraw.Draw(picture)
        for i, caption in enumerate(captions):
            top, left = (i // cols) * cell_h, (i % cols) * cell
            for line_number, line in enumerate(str(caption).split("\n")):
                text = _fit_text(line, cell - 2)
                font = caption_font(text)
                x = left + (cell - font.getlength(text)) / 2
                draw.text((x, top + cell + 1 + line_number * line_h), text, fill=CAPTION_COLOUR, font=font)
        sheet = np.array(picture)
    return sheet


def titled(sheet: np.ndarray, title: str) -> np.ndarray:
    """``sheet`` (H×W×3 uint8) under a band that reads ``title``, cut with "..." to the sheet's width: a sheet
    saved or shared on its own still says what it shows."""
    band_h = _caption_height() + 6
    picture = Image.new("RGB", (sheet.shape[1], band_h + sheet.shape[0]), (BACKGROUND,) * 3)
    picture.paste(Image.fromarray(sheet), (0, band_h))
    text = _fit_text(title, sheet.shape[1] - 8)
    ImageDraw.Draw(picture).text((4, 3), text, fill=CAPTION_COLOUR, font=caption_font(text))
    return np.asarray(picture)


def png_bytes(image: np.ndarray) -> bytes:
    """The image encoded as PNG (gray H×W / H×W×1 stays gray; RGB stays RGB)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def png_data_uri(image: np.ndarray, max_side: int = 128) -> str:
    """The image as a ``data:image/png;base64,…`` URI a browser shows without fetching anything: kept at its own
    size when its longer side fits ``max_side`` (the page scales it up, pixelated), else shrunk to fit."""
    image = np.asarray(image)
    if max(image.shape[:2]) > max_side:
        image = thumbnail(image, max_side)
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
