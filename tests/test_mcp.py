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
    texts = " ".join(c.text for c in result.content if c.type == "text")
    assert "11" in texts and "256×192" in texts  # the seed used and the generation info follow


def test_a_refused_call_says_which_field(mcp_url):
    result = call(mcp_url, lambda session: session.call_tool("text_to_image", {"prompt": "   "}))
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "prompt: is empty" in text
