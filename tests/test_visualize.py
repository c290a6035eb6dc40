"""Pictures stay readable at any image size: label text height measured in the written pixels."""
import cv2
import numpy as np
import pytest

from retdet.evaluation.plots import plot_examples
from retdet.utils.visualize import _PALETTE, draw_boxes, fit_to_cell, image_grid


def label_height(img, colour, box_top):
    """Rows above the box's top edge (minus its line) that hold the label's fill colour."""
    mask = np.all(img == np.array(colour, np.uint8), axis=-1)
    rows = np.nonzero(mask[:box_top].any(axis=1))[0]
    return 0 if rows.size == 0 else int(box_top - rows.min())


@pytest.mark.parametrize("hw", [(378, 504), (540, 960), (1080, 1920)])
def test_demo_labels_scale_with_the_image(hw):
    h, w = hw
    image = np.full((h, w, 3), 255, np.uint8)
    top = h // 2
    out = draw_boxes(image, np.array([[w / 4, top, w / 2, h * 0.9]]), [3], ["cell"], scores=[0.9])
    px = label_height(out, _PALETTE[3], top)
    assert 0.014 * max(h, w) <= px <= 0.05 * max(h, w) + 12, px  # the label grows with the image
    assert px >= 12


def test_grid_labels_are_drawn_at_tile_size(tmp_path):
    """Photos of 378x504 .. 960x540 in the evaluation grid: labels at least 12 px high in the PNG
    (drawn on the full image and then shrunk, they were about 6 px)."""
    examples = []
    for h, w in [(378, 504), (540, 960), (504, 378), (800, 1216)]:
        image = np.full((3, h, w), 255, np.uint8)
        boxes = np.array([[w * 0.2, h * 0.5, w * 0.6, h * 0.9]], np.float32)
        examples.append((image, boxes, np.array([5]), np.array([0.95], np.float32), (h, w)))
    path = plot_examples(examples, ["c"] * 10, str(tmp_path / "detections.png"), cell=400)
    grid = cv2.imread(path)
    assert grid.shape[:2] == (400, 1600)
    for k, (h, w) in enumerate([(378, 504), (540, 960), (504, 378), (800, 1216)]):
        tile = grid[:, 400 * k: 400 * (k + 1)]
        top = int(round(h * 0.5 * 400 / max(h, w)))
        assert label_height(tile, _PALETTE[5], top) >= 12, (h, w)


def test_fit_to_cell_scales_boxes_with_the_image():
    image = np.zeros((540, 960, 3), np.uint8)
    tile, boxes = fit_to_cell(image, np.array([[96.0, 54.0, 960.0, 540.0]]), cell=320)
    assert tile.shape == (180, 320, 3)
    np.testing.assert_allclose(boxes, [[32.0, 18.0, 320.0, 180.0]], rtol=1e-6)
    assert image_grid([tile], columns=1, cell=320).shape == (320, 320, 3)
