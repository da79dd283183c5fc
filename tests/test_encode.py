import pytest
from PIL import Image

from klein.encode import a1111_parameters, encode_image, read_metadata, write_image

META = {"prompt": "a fox in snow — ünïcode", "seed": 42, "model": "tiny", "width": 128, "height": 96,
        "steps": 4, "guidance": 1.0, "workflow": "text_to_image", "references": 0}


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_metadata_survives_each_format(tmp_path, fmt, magic):
    image = Image.effect_noise((128, 96), 40).convert("RGB")
    data = encode_image(image, fmt, META)
    assert data.startswith(magic)
    path = write_image(data, fmt, tmp_path)
    assert path.read_bytes() == data
    record = read_metadata(path)
    assert record["prompt"] == META["prompt"] and record["seed"] == 42 and record["workflow"] == "text_to_image"
    assert record["software"].startswith("Klein Studio")
    assert Image.open(path).size == (128, 96)


def test_png_has_a1111_parameters():
    data = encode_image(Image.new("RGB", (64, 64)), "png", META)
    import io
    text = Image.open(io.BytesIO(data)).info["parameters"]
    assert text == a1111_parameters(META)
    assert "Steps: 4" in text and "Seed: 42" in text and "Size: 128x96" in text


def test_same_inputs_same_bytes():
    image = Image.effect_noise((64, 64), 30).convert("RGB")
    for fmt in ("png", "jpeg", "webp"):
        assert encode_image(image, fmt, META) == encode_image(image, fmt, META)


def test_image_without_metadata():
    assert read_metadata(Image.new("RGB", (10, 10))) is None
