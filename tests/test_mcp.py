"""The four workflows as MCP tools, through the `mcp` client over streamable HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, free_port, wait_for_server

TOOLS = {"text_to_image", "edit_image", "multi_reference_image", "inpaint_image"}


@pytest.fixture(scope="module")
def mcp_url(cache_dir, tmp_path_factory, app_lora_dir):
    port = free_port()
    env = {**os.environ, "KLEIN_CACHE_DIR": str(cache_dir), "GRADIO_MCP_SERVER": "true"}
    log = open(tmp_path_factory.mktemp("mcp-log") / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port),
                                "--lora-dir", str(app_lora_dir)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", process)
        yield f"http://127.0.0.1:{port}/gradio_api/mcp/"
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def call(url: str, action):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def run():
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await action(session)

    return asyncio.run(run())


def test_the_four_workflows_are_tools_with_descriptions(mcp_url):
    tools = call(mcp_url, lambda session: session.list_tools()).tools
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == TOOLS  # helper events (history, reuse seed...) are not tools
    assert "text prompt" in by_name["text_to_image"].description
    assert "Edit an image" in by_name["edit_image"].description
    assert "2 to 4 reference images" in by_name["multi_reference_image"].description
    assert "Repaint the masked part" in by_name["inpaint_image"].description
    assert "prompt" in by_name["text_to_image"].inputSchema["properties"]


def test_descriptions_are_whole_and_say_how_images_go_in(mcp_url):
    """Each parameter's description is the endpoint's whole sentence; file tools name the ways an image
    can go in (Gradio's own text pointed agents at an upload_file_to_gradio tool that does not exist)."""
    import gradio.utils

    from klein.config import MODELS
    from klein.ui.endpoints import ENDPOINTS, make_endpoint

    tools = {tool.name: tool for tool in call(mcp_url, lambda session: session.list_tools()).tools}
    for endpoint in ENDPOINTS:
        tool = tools[endpoint.tool_name]
        _, docs, _ = gradio.utils.get_function_description(make_endpoint(endpoint, MODELS["tiny"], None))
        for name, schema in tool.inputSchema["properties"].items():
            assert schema["description"] == docs[name] and docs[name].endswith("."), (tool.name, name)
        assert "upload_file_to_gradio" not in tool.description
    assert tools["text_to_image"].inputSchema["properties"]["safety_tolerance"]["description"].endswith(
        "moderates the prompt, the reference images and the result.")
    for name in ("edit_image", "multi_reference_image", "inpaint_image"):
        assert "data URI" in tools[name].description and "http(s) URL" in tools[name].description


def test_a_tool_call_returns_the_image_as_image_content(mcp_url):
    arguments = {"prompt": "a lighthouse", "custom_size": True, "width": 256, "height": 192,
                 "randomize_seed": False, "seed": 11}
    result = call(mcp_url, lambda session: session.call_tool("text_to_image", arguments))
    assert not result.isError, result.content
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mimeType in ("image/jpeg", "image/png")
    assert Image.open(io.BytesIO(base64.b64decode(images[0].data))).size == (256, 192)
    texts = [c.text for c in result.content if c.type == "text"]
    assert "11" in texts  # the seed used, as its own item
    info = json.loads(texts[-1])  # and the generation info, as JSON fields
    assert (info["seed"], info["width"], info["height"], info["workflow"]) == (11, 256, 192, "text_to_image")


def test_a_seed_given_alone_is_the_seed_used(mcp_url):
    arguments = {"prompt": "a lighthouse", "custom_size": True, "width": 64, "height": 64, "seed": 42}
    result = call(mcp_url, lambda session: session.call_tool("text_to_image", arguments))
    assert not result.isError, result.content
    assert json.loads([c.text for c in result.content if c.type == "text"][-1])["seed"] == 42


def test_a_refused_call_says_which_field(mcp_url):
    result = call(mcp_url, lambda session: session.call_tool("text_to_image", {"prompt": "   "}))
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "prompt: is empty" in text


def data_uri(name: str) -> str:
    return "data:image/png;base64," + base64.b64encode((ROOT / "assets" / name).read_bytes()).decode()


def only_image(result) -> Image.Image:
    assert not result.isError, result.content
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1
    return Image.open(io.BytesIO(base64.b64decode(images[0].data)))


def test_edit_tool_takes_a_data_uri(mcp_url):
    arguments = {"image": data_uri("robot.png"), "prompt": "give the robot a hat", "custom_size": True,
                 "width": 128, "height": 96}
    assert only_image(call(mcp_url, lambda session: session.call_tool("edit_image", arguments))).size == (128, 96)


def test_multi_reference_tool_takes_a_list_of_images(mcp_url):
    # Gradio's own schema for a Gallery had dangling $refs: MCP clients refused every call.
    schema = {t.name: t for t in call(mcp_url, lambda session: session.list_tools()).tools}[
        "multi_reference_image"].inputSchema
    assert schema["properties"]["images"]["items"]["required"] == ["image"]
    images = [{"image": data_uri("robot.png")}, {"image": data_uri("mug.png")}]
    arguments = {"images": images, "prompt": "the robot holding the mug", "custom_size": True,
                 "width": 96, "height": 128}
    result = call(mcp_url, lambda session: session.call_tool("multi_reference_image", arguments))
    assert only_image(result).size == (96, 128)
    assert json.loads([c.text for c in result.content if c.type == "text"][-1])["workflow"] == "multi_reference"


def test_multi_reference_tool_names_the_field_for_one_image(mcp_url):
    arguments = {"images": [{"image": data_uri("robot.png")}], "prompt": "x"}
    result = call(mcp_url, lambda session: session.call_tool("multi_reference_image", arguments))
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "images: 1 reference image given, multi-reference needs 2 to 4" in text


def error_text(result) -> str:
    assert result.isError, result.content
    return " ".join(c.text for c in result.content if c.type == "text")


def test_a_loopback_url_is_refused_naming_the_field(mcp_url):
    arguments = {"image": "http://127.0.0.1:9/photo.png", "prompt": "x"}
    text = error_text(call(mcp_url, lambda session: session.call_tool("edit_image", arguments)))
    assert text.startswith("image: could not fetch http://127.0.0.1:9/photo.png"), text
    assert "data URI" in text and "upstream Gradio app" not in text


@pytest.mark.parametrize("images, field", [
    ([data_uri("robot.png"), data_uri("mug.png")], "images[0]"),  # strings, not {"image": ...}
    (data_uri("robot.png"), "images"),  # one string, not a list
])
def test_a_malformed_images_list_is_a_short_error_naming_the_field(mcp_url, images, field):
    arguments = {"images": images, "prompt": "x"}
    text = error_text(call(mcp_url, lambda session: session.call_tool("multi_reference_image", arguments)))
    assert text.startswith(f"{field}: "), text[:300]
    assert len(text) < 400, text[:600]  # the 5 KB of base64 are not echoed back


def test_an_image_that_is_neither_url_nor_data_uri_names_the_field(mcp_url):
    raw = base64.b64encode((ROOT / "assets" / "robot.png").read_bytes()).decode()  # base64 without "data:"
    text = error_text(call(mcp_url, lambda session: session.call_tool("edit_image", {"image": raw, "prompt": "x"})))
    assert text.startswith("image: ") and "data URI" in text and len(text) < 400, text[:600]


def texts(result) -> list[str]:
    return [c.text for c in result.content if c.type == "text"]


def test_inpaint_tool_takes_image_and_mask_as_data_uris(mcp_url):
    mask = Image.new("L", Image.open(ROOT / "assets" / "robot.png").size, 0)
    mask.paste(255, (20, 20, 80, 80))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    mask_uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    arguments = {"image": data_uri("robot.png"), "mask": mask_uri, "prompt": "a red scarf", "strength": 0.9,
                 "output_format": "png", "seed": 4}
    result = call(mcp_url, lambda session: session.call_tool("inpaint_image", arguments))
    output, original = np.asarray(only_image(result).convert("RGB")), np.asarray(Image.open(ROOT / "assets" /
                                                                                            "robot.png").convert("RGB"))
    assert output.shape == original.shape
    outside = np.ones(output.shape[:2], dtype=bool)
    outside[20 - 8:80 + 8, 20 - 8:80 + 8] = False
    assert np.array_equal(output[outside], original[outside])
    info = json.loads(texts(result)[-1])
    assert (info["workflow"], info["strength"], info["seed"]) == ("inpaint", 0.9, 4)
    arguments["mask"] = data_uri("mug.png")  # a colour image, and not the image's size
    assert error_text(call(mcp_url, lambda session: session.call_tool("inpaint_image", arguments))).startswith("mask: ")


def test_loras_and_enhance_prompt_through_mcp(mcp_url):
    schema = {t.name: t for t in call(mcp_url, lambda session: session.list_tools()).tools}["text_to_image"].inputSchema
    assert schema["properties"]["loras"]["items"]["required"] == ["path"]
    assert schema["properties"]["enhance_prompt"]["type"] == "boolean"
    arguments = {"prompt": "a fox", "width": 64, "height": 64, "seed": 2, "loras": [{"path": "ink", "scale": 0.5}],
                 "enhance_prompt": True}
    info = json.loads(texts(call(mcp_url, lambda session: session.call_tool("text_to_image", arguments)))[-1])
    assert info["loras"] == [{"name": "ink.safetensors", "scale": 0.5}] and info["enhanced_prompt"]
    arguments["loras"] = [{"path": "missing-style", "scale": 1}]
    text = error_text(call(mcp_url, lambda session: session.call_tool("text_to_image", arguments)))
    assert text.startswith("loras[0].path: "), text


def test_num_images_is_a_parameter_and_every_image_comes_back_once(mcp_url):
    schema = {t.name: t for t in call(mcp_url, lambda session: session.list_tools()).tools}["edit_image"].inputSchema
    assert schema["properties"]["num_images"]["default"] == 1
    assert schema["properties"]["num_images"]["description"].startswith("how many images to make, 1..4")
    arguments = {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": 4294967295, "num_images": 3,
                 "output_format": "png"}
    result = call(mcp_url, lambda session: session.call_tool("text_to_image", arguments))
    assert not result.isError, result.content
    images = [Image.open(io.BytesIO(base64.b64decode(c.data))) for c in result.content if c.type == "image"]
    assert [image.size for image in images] == [(64, 64)] * 3
    assert len({image.tobytes() for image in images}) == 3  # three seeds, three images, each once
    info = json.loads(texts(result)[-1])
    assert (info["seed"], info["seeds"], info["moderated_seeds"]) == (4294967295, [4294967295, 0, 1], [])
    assert texts(result)[-2] == "4294967295"  # the seed output follows the images, as for one image
