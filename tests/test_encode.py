import pytest
from PIL import Image

from klein.output.encode import a1111_parameters, encode_image, read_metadata
from klein.output.files import write_image

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


def test_settings_from_a_klein_image_and_an_a1111_png(tmp_path):
    from PIL import PngImagePlugin

    from klein.output.encode import settings_from_image

    klein_file = write_image(encode_image(Image.new("RGB", (64, 64)), "webp", META), "webp", tmp_path)
    assert settings_from_image(klein_file)["seed"] == 42

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", 'a castle, sunset\nNegative prompt: blurry\n'
                  'Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1234, Size: 512x768, Model: sdxl, '
                  'Lora hashes: "a: 1, b: 2"')
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    assert settings_from_image(path) == {"prompt": "a castle, sunset", "seed": 1234, "steps": 20, "guidance": 7.5,
                                         "model": "sdxl", "width": 512, "height": 768}


def test_a1111_jpeg_user_comment_in_utf16(tmp_path):
    from klein.output.encode import EXIF_IFD, EXIF_USER_COMMENT, settings_from_image

    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[EXIF_USER_COMMENT] = b"UNICODE\x00" + "a fox\nSteps: 4, Seed: 7, Size: 64x64".encode(
        "utf-16-be")
    path = tmp_path / "a1111.jpg"
    Image.new("RGB", (64, 64)).save(path, exif=exif)
    assert settings_from_image(path) == {"prompt": "a fox", "seed": 7, "steps": 4, "width": 64, "height": 64}


def test_image_without_any_settings(tmp_path):
    from klein.output.encode import settings_from_image

    path = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(path)
    assert settings_from_image(path) is None
