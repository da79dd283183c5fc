"""Errors through Gradio's API: what the user sees is short and names the field; the server keeps serving."""

from __future__ import annotations

import logging
import struct
import zlib

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import free_port

SMALL = dict(custom_size=True, width=128, height=96)


def header_only_png(path, width: int, height: int) -> str:
    """A PNG of a few hundred bytes that claims width x height pixels: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return str(path)


@pytest.fixture(scope="module")
def in_process_app(engine):
    """The demo over the shared engine, launched in this process so a test can make the engine fail."""
    from klein.ui.app import build_demo

    demo = build_demo(engine)
    demo.queue()
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def test_an_unexpected_error_is_a_short_message_and_the_server_goes_on(in_process_app, engine, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine, "generate_batch", broken)
    with caplog.at_level(logging.ERROR, logger="klein.ui"), pytest.raises(AppError) as info:
        in_process_app.predict(prompt="a fox", api_name="/text_to_image", **SMALL)
    assert str(info.value) == "Something went wrong on the server; the log has the details."
    assert "secret internal detail" not in str(info.value)
    assert any(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()
    path, _, _, _ = in_process_app.predict(prompt="a fox", api_name="/text_to_image", **SMALL)
    assert Image.open(path).size == (128, 96)


def test_a_missing_custom_width_names_the_field(in_process_app):
    with pytest.raises(AppError, match="width: is missing"):
        in_process_app.predict(prompt="a fox", custom_size=True, width=None, height=96, api_name="/text_to_image")


def test_a_decompression_bomb_is_refused_naming_the_field(client_for_app, tmp_path):
    bomb = header_only_png(tmp_path / "bomb.png", 20000, 20000)  # 400 MP: PIL refuses it in Gradio's preprocess
    with pytest.raises(AppError, match=r"image: image is too large to decode safely \(400,000,000 pixels\)"):
        client_for_app.predict(image=handle_file(bomb), prompt="x", api_name="/edit")
    large = header_only_png(tmp_path / "large.png", 8000, 8000)  # 64 MP: our own limit, before decoding
    with pytest.raises(AppError, match=r"image: image is 8000x8000 \(64,000,000 pixels\); the limit is 40,000,000"):
        client_for_app.predict(image=handle_file(large), prompt="x", api_name="/edit")


def test_a_bomb_in_the_gallery_names_its_index(client_for_app, tmp_path):
    bomb = header_only_png(tmp_path / "bomb.png", 20000, 20000)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (128, 128), "red").save(ok)
    images = [{"image": handle_file(str(ok)), "caption": None}, {"image": handle_file(bomb), "caption": None}]
    with pytest.raises(AppError, match=r"images\[1\]: image is too large to decode safely \(400,000,000 pixels\)"):
        client_for_app.predict(images=images, prompt="x", api_name="/multi_reference")


@pytest.fixture(scope="module")
def client_for_app(app_url):
    return Client(app_url, verbose=False)


def test_a_truncated_image_that_claims_36_megapixels_is_refused(client_for_app, tmp_path):
    """A 97-byte PNG that says 6000x6000: its pixel data is missing, so it is refused, not decoded as
    36 MP of nothing (issue 11)."""
    truncated = header_only_png(tmp_path / "truncated.png", 6000, 6000)
    assert (tmp_path / "truncated.png").stat().st_size < 120
    with pytest.raises(AppError, match=r"image: image data is corrupt or truncated"):
        client_for_app.predict(image=handle_file(truncated), prompt="x", api_name="/edit")
