"""Image galleries on the pages: thumbnails laid out by the browser, so a row holds as many as the column is wide at
any window size (no picture of a fixed width, shrunk until its captions cannot be read), with captions in the
browser's own fonts (any script a file name is written in) and a red frame on the images to look at."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import streamlit as st

from engine.analysis.thumbnails import BORDER, png_data_uri

OUTLINE_CSS = "rgb(220, 30, 30)"  # the colour PNG sheets outline with (engine.analysis.thumbnails)


def grid_html(images: np.ndarray, captions: Sequence[str], outline: Sequence[bool] | None = None,
              cell: int = 64) -> str:
    """An HTML gallery of ``images`` (N×H×W×C uint8): each at ``cell`` pixels (small images scaled up pixelated,
    large ones shrunk), its caption under it, one line per ``"\\n"``-separated part, each line cut with "…" to the
    cell's width (the whole caption shows on hover), and a red frame where ``outline`` is true."""
    if len(captions) != len(images) or (outline is not None and len(outline) != len(images)):
        raise ValueError(f"{len(images)} images need as many captions and outline entries")
    figures = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        frame = OUTLINE_CSS if outline is not None and outline[i] else "transparent"
        lines = "".join(f'<div style="overflow:hidden;text-overflow:ellipsis;white-space:nowrap">'
                        f"{html.escape(line)}</div>" for line in str(caption).split("\n"))
        figures.append(
            f'<figure style="margin:0;width:{cell}px" title="{html.escape(str(caption))}">'
            f'<img src="{png_data_uri(image, max_side=cell)}" alt="{html.escape(str(caption).splitlines()[0])}" '
            f'style="display:block;width:{cell}px;height:{cell}px;object-fit:contain;image-rendering:pixelated;'
            f'box-sizing:border-box;border:{BORDER}px solid {frame}">'
            f'<figcaption style="font-size:11px;line-height:1.25;text-align:center;color:#333">{lines}</figcaption>'
            "</figure>")
    return f'<div class="dce-gallery" style="display:flex;flex-wrap:wrap;gap:6px 4px">{"".join(figures)}</div>'


def image_grid(images: np.ndarray, captions: Sequence[str], outline: Sequence[bool] | None = None,
               cell: int = 64) -> None:
    """Show :func:`grid_html`'s gallery on the page."""
    st.html(grid_html(images, captions, outline, cell))
