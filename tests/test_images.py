import base64
import io

import numpy as np
import pytest
from PIL import Image

from klein.config import Limits
from klein.errors import InvalidRequest
from klein.images import load_reference


def encoded(image: Image.Image, fmt="PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def refused(source, fragment, field="images[0]", limits=Limits()):
    with pytest.raises(InvalidRequest) as info:
        load_reference(source, field, limits)
    assert str(info.value).startswith(f"{field}: ") and fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_from_bytes(fmt):
    image = load_reference(encoded(Image.new("RGB", (100, 80), "blue"), fmt), "image")
    assert image.mode == "RGB" and image.size == (100, 80)


def test_data_uri_base64_and_path(tmp_path):
    data = encoded(Image.new("RGB", (90, 90), "green"))
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    assert load_reference(uri, "image").size == (90, 90)
    path = tmp_path / "ref.png"
    path.write_bytes(data)
    assert load_reference(str(path), "image").size == (90, 90)
    assert load_reference(path, "image").size == (90, 90)
    assert load_reference(base64.b64encode(data).decode(), "image").size == (90, 90)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (200, 100), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    loaded = load_reference(encoded(image, "JPEG", exif=exif), "image")
    assert loaded.size == (100, 200)


def test_transparency_becomes_white():
    image = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    loaded = load_reference(encoded(image), "image")
    assert loaded.mode == "RGB" and loaded.getpixel((5, 5)) == (255, 255, 255)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encoded(Image.new("L", (12000, 12000)), optimize=True)  # ~144 MP in a few hundred KB
    assert len(bomb) < 1_000_000
    refused(bomb, "12000x12000 (144,000,000 pixels); the limit is 40,000,000")


def test_byte_limit():
    data = encoded(Image.new("RGB", (100, 100), "red"))
    refused(data, f"image is {len(data):,} bytes; the limit is 100 bytes", limits=Limits(max_image_bytes=100))


def test_small_side_and_aspect():
    refused(encoded(Image.new("RGB", (63, 200))), "63x200; each side must be at least 64 px")
    refused(encoded(Image.new("RGB", (900, 100))), "900x100; the aspect ratio must be at most 8:1")
    refused(Image.new("RGB", (40, 40)), "40x40", field="image")


def test_not_an_image_and_unaccepted_format(tmp_path):
    refused(b"hello, not an image", "not a readable image")
    refused(encoded(Image.new("RGB", (100, 100)), "GIF"), "accepted formats are PNG, JPEG and WebP")
    refused(str(tmp_path / "missing.png"), "no image file at")
    refused("data:image/png,abc", "must be base64-encoded")
    refused("data:image/png;base64,!!!notbase64!!!", "not valid base64")


def test_truncated_image_is_refused():
    data = encoded(Image.effect_noise((256, 256), 50).convert("RGB"), "PNG")
    refused(data[: len(data) // 2], "corrupt or truncated")


def test_a_large_reference_is_shrunk_as_the_pipeline_would_shrink_it():
    """Same size and filter as Flux2ImageProcessor._resize_to_target_area, so the pipeline's input is unchanged."""
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    big = Image.effect_noise((3000, 1500), 64).convert("RGB")
    ours = load_reference(encoded(big), "image")
    theirs = Flux2ImageProcessor._resize_to_target_area(big, 1024 * 1024)
    assert ours.size == theirs.size and ours.width * ours.height <= 1024 * 1024
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    small = Image.new("RGB", (640, 480), (1, 2, 3))
    assert load_reference(encoded(small), "image").size == (640, 480)


def test_concurrent_decodes_share_one_pixel_budget(monkeypatch):
    """Four 6000x6000 images decoded at once never hold more than the budget's pixels together."""
    import threading

    from klein import images

    budget = images.PixelBudget(40_000_000)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    peak, lock = [0], threading.Lock()
    original_load = Image.Image.load

    def watched_load(self):
        with lock:
            peak[0] = max(peak[0], budget._used)
        return original_load(self)

    monkeypatch.setattr(Image.Image, "load", watched_load)
    data = encoded(Image.new("L", (6000, 6000)))
    limits = Limits(max_image_pixels=40_000_000)
    threads = [threading.Thread(target=load_reference, args=(data, f"images[{i}]", limits)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < peak[0] <= 40_000_000 and budget._used == 0


def test_a_full_budget_is_a_busy_error_not_a_hang():
    from klein import images
    from klein.errors import QueueFull

    budget = images.PixelBudget(100, wait_seconds=0.05)
    with budget.reserve(100, "images[0]"):
        with pytest.raises(QueueFull, match=r"images\[1\]: the server is busy decoding"):
            with budget.reserve(50, "images[1]"):
                pass
