"""The Inpaint tab's conversion of the image editor's value into the /inpaint endpoint's image and mask."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from klein.ui.inpaint import editor_inputs, painted_mask


def editor(size=(96, 64), strokes=()):
    """An ImageEditor value (type pil): a background and one RGBA layer with `strokes` (x0, y0, x1, y1) painted."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    for box in strokes:
        layer.paste((255, 61, 127, 200), box)  # any colour, partly transparent: still paint
    return {"background": Image.new("RGBA", size, (10, 200, 30, 255)), "layers": [layer], "composite": None}


def test_painted_pixels_are_white_and_the_rest_black():
    image, mask = editor_inputs(editor(strokes=[(10, 20, 40, 30)]), None)
    assert image.mode == "RGB" and image.size == (96, 64) and image.getpixel((0, 0)) == (10, 200, 30)
    expected = np.zeros((64, 96), dtype=np.uint8)
    expected[20:30, 10:40] = 255
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), expected)


def test_a_mask_file_alone_is_passed_on_and_with_paint_they_are_joined(tmp_path):
    upload = np.zeros((64, 96), dtype=np.uint8)
    upload[0:8, 0:8] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(upload).save(path)
    assert editor_inputs(editor(), str(path))[1] == str(path)  # checked by the endpoint, as an API caller's
    joined = np.asarray(editor_inputs(editor(strokes=[(50, 50, 60, 60)]), str(path))[1])
    assert joined[0:8, 0:8].min() == 255 and joined[50:60, 50:60].min() == 255 and joined.sum() == 255 * 164


@pytest.mark.parametrize("value, message", [
    (None, "image: is missing"),
    (editor(), "mask: nothing is painted"),
])
def test_nothing_to_work_on_names_the_field(value, message):
    with pytest.raises(gr.Error, match=message):
        editor_inputs(value, None)


def test_a_mask_file_of_another_size_names_the_mask(tmp_path):
    path = tmp_path / "other.png"
    Image.new("L", (128, 128), 255).save(path)
    with pytest.raises(gr.Error, match="mask: is 128x128; it must be the image's size, 96x64"):
        editor_inputs(editor(strokes=[(0, 0, 4, 4)]), str(path))


def test_a_mask_file_is_read_within_the_limits_and_colour_is_refused(tmp_path):
    small, colour = tmp_path / "small.png", tmp_path / "colour.png"
    Image.new("L", (32, 32), 255).save(small)
    Image.new("RGB", (96, 64), (255, 0, 0)).save(colour)
    with pytest.raises(gr.Error, match="mask: image is 32x32; each side must be at least 64 px"):
        editor_inputs(editor(strokes=[(0, 0, 4, 4)]), str(small))
    with pytest.raises(gr.Error, match="mask: is a colour image"):
        editor_inputs(editor(strokes=[(0, 0, 4, 4)]), str(colour))


def test_a_layer_of_another_size_is_scaled_to_the_image():
    layer = Image.new("RGBA", (48, 32), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (0, 0, 24, 16))
    mask = np.asarray(painted_mask([layer], (96, 64)))
    assert mask[:32, :48].min() == 255 and mask[32:, :].max() == 0 and mask[:, 48:].max() == 0
    assert painted_mask([None, Image.new("RGBA", (96, 64))], (96, 64)) is None
