"""The three workflows as MCP tools, through the `mcp` client over streamable HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT, free_port, wait_for_server

TOOLS = {"text_to_image", "edit_image", "multi_reference_image"}


@pytest.fixture(scope="module")
def mcp_url(cache_dir, tmp_path_factory):
    port = free_port()
    env = {**os.environ, "KLEIN_CACHE_DIR": str(cache_dir), "GRADIO_MCP_SERVER": "true"}
    log = open(tmp_path_factory.mktemp("mcp-log") / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port)],
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


def test_the_three_workflows_are_tools_with_descriptions(mcp_url):
    tools = call(mcp_url, lambda session: session.list_tools()).tools
    by_name = {tool.name: tool for tool in tools}
    assert set(by_name) == TOOLS  # helper events (history, reuse seed...) are not tools
    assert "text prompt" in by_name["text_to_image"].description
    assert "Edit an image" in by_name["edit_image"].description
    assert "2 to 4 reference images" in by_name["multi_reference_image"].description
    assert "prompt" in by_name["text_to_image"].inputSchema["properties"]


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
    assert any("256×192" in text for text in texts)  # and the generation info


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
    assert any("multi reference" in c.text for c in result.content if c.type == "text")


def test_multi_reference_tool_names_the_field_for_one_image(mcp_url):
    arguments = {"images": [{"image": data_uri("robot.png")}], "prompt": "x"}
    result = call(mcp_url, lambda session: session.call_tool("multi_reference_image", arguments))
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "images: 1 reference image given, multi-reference needs 2 to 4" in text
