"""With KLEIN_API_KEYS set, no route that generates, uploads or serves results is open without a key:
REST, the Gradio API, uploads, files, MCP and the page itself (a login whose password is a key)."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from tests.conftest import ROOT, free_port

KEY = "gate-key-1"
BEARER = {"Authorization": f"Bearer {KEY}"}
SMALL = {"custom_size": True, "width": 128, "height": 128}
# Routes anyone may read: the login page and what it needs to draw itself, and the REST docs. A
# route added later that is not listed here must refuse a request without a key.
PUBLIC = {"/", "/login", "/login/", "/logout", "/favicon.ico", "/manifest.json", "/pwa_icon", "/pwa_icon/{size}",
          "/theme.css", "/robots.txt", "/docs", "/openapi.json", "/gradio_api/login_check",
          "/gradio_api/login_check/", "/gradio_api/startup-events"}
PUBLIC_PREFIXES = ("/static/", "/assets/", "/svelte/")


@pytest.fixture(scope="module")
def gated_app(cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gated")
    port = free_port()
    env = {**os.environ, "KLEIN_CACHE_DIR": str(cache_dir), "KLEIN_API_KEYS": KEY, "GRADIO_MCP_SERVER": "1",
           "KLEIN_OUTPUT_DIR": str(folder / "out"), "KLEIN_TASKS_DB": str(folder / "tasks.db")}
    log_path = folder / "app.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + "/gradio_api/info", headers=BEARER, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url, log_path
    finally:
        process.terminate()
        process.wait(15)


def test_the_gradio_api_refuses_a_missing_or_wrong_key(gated_app):
    url, _ = gated_app
    body = {"data": ["a fox", "square_1_1", "1k", 0, True, "jpeg", True, 128, 128, 4, 1.0, 2]}
    assert httpx.post(url + "/gradio_api/call/text_to_image", json=body).status_code == 401
    wrong = httpx.post(url + "/gradio_api/call/text_to_image", json=body, headers={"x-key": "nope"})
    assert wrong.status_code == 401 and "nope" not in wrong.text
    files = {"files": ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    assert httpx.post(url + "/gradio_api/upload", files=files).status_code == 401
    assert httpx.get(url + "/config").status_code == 401


def test_gradio_client_with_the_key_in_a_header_or_a_login(gated_app):
    from gradio_client import Client

    url, log_path = gated_app
    for client in (Client(url + "/", headers=BEARER, verbose=False), Client(url + "/", auth=("me", KEY), verbose=False)):
        path, seed, _, _ = client.predict(prompt="a fox", **SMALL, api_name="/text_to_image")
        assert Image.open(path).size == (128, 128) and isinstance(seed, int)
    assert KEY not in log_path.read_text()


def test_the_page_asks_for_a_login_whose_password_is_a_key(gated_app):
    url, _ = gated_app
    page = httpx.get(url + "/")
    assert page.status_code == 200 and '"auth_required":true' in page.text.replace(" ", "")
    refused = httpx.post(url + "/login", data={"username": "me", "password": "wrong"})
    assert refused.status_code == 400
    with httpx.Client(base_url=url) as browser:
        assert browser.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        assert browser.get("/config").status_code == 200


def test_mcp_needs_the_key(gated_app):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    url, _ = gated_app
    assert httpx.post(url + "/gradio_api/mcp/", json={}).status_code == 401
    image = io.BytesIO()
    Image.new("RGB", (96, 96), (0, 120, 200)).save(image, "PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()

    async def run():
        async with streamablehttp_client(url + "/gradio_api/mcp/", headers=BEARER) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                made = await session.call_tool("text_to_image", {"prompt": "a fox", **SMALL})
                edited = await session.call_tool("edit_image", {"image": data_uri, "prompt": "winter", **SMALL})
                return made, edited

    made, edited = asyncio.run(run())
    assert not made.isError and made.content[0].type == "image", made
    assert not edited.isError and edited.content[0].type == "image", edited


def test_every_route_that_is_not_public_refuses_a_request_without_a_key(gated_app, engine, tmp_path):
    """Walks the app's own route table (built as app.py builds it), so a route added later cannot be
    forgotten, and asks each of the running app's routes without a key."""
    url, _ = gated_app
    open_routes = []
    table = route_table(engine, tmp_path)
    assert len(table) > 30 and ("/gradio_api/upload", {"POST"}) in table
    for path, methods in table:
        if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            continue
        concrete = path.replace("{", "").replace("}", "").replace(":path", "")
        for method in methods - {"HEAD", "OPTIONS"}:
            status = httpx.request(method, url + concrete, timeout=10).status_code
            if status not in (401, 403):
                open_routes.append((method, path, status))
    assert not open_routes, "\n".join(map(str, open_routes))


def route_table(engine, folder) -> list[tuple[str, set[str]]]:
    """(path, methods) of every route of Gradio's app with the REST routes and MCP, as app.py builds it."""
    import gradio.routes

    from klein.config import RestSettings
    from klein.rest.api import RestApi
    from klein.ui.app import build_demo

    rest = RestApi(engine, RestSettings(api_keys=(KEY,), tasks_db=folder / "tasks.db"))
    demo = build_demo(engine)
    demo.queue()
    app = gradio.routes.App.create_app(demo, app_kwargs=rest.app_kwargs(gate=True), mcp_server=True)
    return list(flatten(app.routes))


def flatten(routes) -> list[tuple[str, set[str]]]:
    """Routes, routers included by FastAPI (their paths carry the prefix) and mounts (MCP) alike."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from flatten(route.original_router.routes)
        elif getattr(route, "path", ""):
            methods = getattr(route, "methods", None) or {"GET", "POST"}  # a mount answers both
            yield route.path, set(methods)
