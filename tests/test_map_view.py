"""The Map page's logic without a browser: hover thumbnails, finding images, selections, the centred view."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from engine.analysis.map_view import (find_images, hover_batch, hover_captions, images_in_areas, map_extent,
                                      point_on_chart, view_window)
from engine.analysis.thumbnails import png_data_uri


def decode_uri(uri: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):]))))


def test_a_hover_sends_the_hovered_image_then_its_nearest_drawn_points():
    coords = np.array([[0, 0], [1, 0], [0.1, 0], [5, 5], [0.2, 0], [0.3, 0]], dtype=np.float32)
    batch = hover_batch(coords, np.array([0, 1, 2, 3, 5]), index=0, k=3)
    assert batch.tolist() == [0, 2, 5, 1]  # 4 is not drawn (filtered out), 3 is farther than 1
    assert hover_batch(coords, np.array([0, 1, 2, 3, 5]), index=0, k=10).tolist() == [0, 2, 5, 1, 3]
    assert hover_batch(coords, np.array([3]), index=3).tolist() == [3]


def test_find_an_image_by_index_or_by_file_name():
    names = ["cat_01.png", "Dog_02.png", "cat_10.png", "#3"]
    assert find_images("#2", names).tolist() == [2]
    assert find_images("2", names).tolist() == [2, 1]  # the index first, then file names holding a "2"
    assert find_images("dog", names).tolist() == [1]  # case-insensitive
    assert find_images(" CAT_ ", names).tolist() == [0, 2]
    assert find_images("cat", names, limit=1).tolist() == [0]
    assert find_images("#9", names).tolist() == [] and find_images("", names).tolist() == []


def test_images_without_files_are_found_by_their_index_only():
    names = [f"#{i}" for i in range(200)]
    assert find_images("5", names).tolist() == [5]  # not #15, #50, #105 …
    assert find_images("#150", names).tolist() == [150]
    assert find_images("#", names).tolist() == []


def test_the_centred_view_shows_a_share_of_the_map_around_the_image():
    coords = np.array([[0, 0], [10, 0], [0, 20], [4, 5]], dtype=np.float32)
    x_range, y_range = view_window(coords, 3, share=0.2)
    assert x_range == pytest.approx([3, 5]) and y_range == pytest.approx([3, 7])
    with pytest.raises(ValueError, match="share"):
        view_window(coords, 3, share=0)


def test_hover_captions_spell_out_cluster_and_label():
    assign, labels = np.array([8, 0]), np.array([1, 0])
    assert hover_captions(["#0", "a.png"], assign, labels, ["zero", "one"]) == ["#0 · cluster 8 · label one",
                                                                                "a.png · cluster 0 · label zero"]
    assert hover_captions(["#0", "#1"], assign) == ["#0 · cluster 8", "#1 · cluster 0"]
    assert hover_captions(["#0"], np.array([2]), np.array([7])) == ["#0 · cluster 2 · label 7"]


def test_a_thumbnail_uri_keeps_small_images_whole_and_shrinks_large_ones():
    digit = np.random.default_rng(0).integers(0, 255, (8, 8, 1), dtype=np.uint8)
    assert np.array_equal(decode_uri(png_data_uri(digit)), digit[..., 0])
    photo = np.random.default_rng(1).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    assert decode_uri(png_data_uri(photo, max_side=128)).shape == (128, 85, 3)


def test_a_box_or_lasso_on_the_map_selects_the_shown_images_inside_it():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(5000, 2))
    shown = np.flatnonzero(rng.random(5000) < 0.5)  # filters hide the other half
    box = {"brush_type": "rect", "coord_range": [[0.5, -0.5], [-1.0, 1.0]]}  # a box dragged right to left
    inside_box = shown[(np.abs(coords[shown, 0]) <= 0.5) & (np.abs(coords[shown, 1]) <= 1.0)]
    assert images_in_areas(coords, shown, [box]) == inside_box.tolist()
    triangle = {"brush_type": "polygon", "coord_range": [[0, 0], [2, 0], [0, 2]]}
    x, y = coords[shown, 0], coords[shown, 1]
    inside_triangle = shown[(x > 0) & (y > 0) & (x + y < 2)]
    assert images_in_areas(coords, shown, [triangle]) == inside_triangle.tolist()
    both = images_in_areas(coords, shown, [box, triangle])
    assert both == sorted(set(inside_box.tolist()) | set(inside_triangle.tolist()))  # each image once
    assert images_in_areas(coords, shown, []) == []
    assert images_in_areas(coords, shown, [{"brush_type": "polygon", "coord_range": [[0, 0], [1, 1]]}]) == []


def test_a_point_is_drawn_where_its_coordinates_fall_in_the_plot_area():
    coords = np.array([[0.0, 0.0], [10.0, 5.0], [5.0, 2.5]])
    extent = map_extent(coords, margin=0)
    assert extent == ([0.0, 10.0], [0.0, 5.0])
    low_left, top_right, middle = (point_on_chart(coords, i, extent, 600, 400) for i in range(3))
    assert low_left[0] < middle[0] < top_right[0] and top_right[1] < middle[1] < low_left[1]  # y grows downwards
    assert middle == pytest.approx(((low_left[0] + top_right[0]) / 2, (low_left[1] + top_right[1]) / 2))
