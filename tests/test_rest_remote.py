"""image_uris fetched over HTTP: loopback allowed only by the test setting, redirects re-checked,
byte limit and timeout; the URL rules themselves."""

from __future__ import annotations

import time

import pytest
from conftest_rest import AUTH, SMALL, Loopback, make_client, png_bytes, rest_settings, started_client

from klein.config import Limits
from klein.errors import InvalidRequest
from klein.rest.remote import UrlPolicy, check_url, fetch_bytes, is_public

GEN = "/v1/generate"
IMAGE = png_bytes()


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    with started_client(engine, tmp_path_factory) as client:
        yield client


def serve(record):
    if record["path"] == "/image.png":
        return 200, {"Content-Type": "image/png"}, IMAGE
    if record["path"] == "/redirect":
        return 302, {"Location": "/image.png"}, b""
    if record["path"].startswith("/to-private"):
        return 302, {"Location": f"http://127.0.0.2:{record['path'].split('=')[1]}/image.png"}, b""
    if record["path"] == "/loop":
        return 302, {"Location": "/loop"}, b""
    if record["path"] == "/slow":
        time.sleep(2)
        return 200, {}, IMAGE
    return 404, {}, b"nope"


@pytest.fixture(scope="module")
def server():
    with Loopback(serve) as loopback:
        yield loopback


def test_loopback_image_uri_allowed_in_test_settings(client, server):
    body = {"prompt": "edit", "image_uris": [f"{server.url}/image.png"], **SMALL}
    response = client.post(GEN, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["workflow"] == "edit"


def test_redirect_is_followed(client, server):
    body = {"prompt": "edit", "image_uris": [f"{server.url}/redirect", f"{server.url}/image.png"], **SMALL}
    assert client.post(GEN, json=body, headers=AUTH).json()["workflow"] == "multi_reference"


def test_loopback_refused_by_default(engine, tmp_path, server):
    _, client = make_client(engine, rest_settings(tmp_path, allow_private_urls=False))
    response = client.post(GEN, json={"prompt": "x", "image_uris": [f"{server.url}/image.png"]}, headers=AUTH)
    assert response.status_code == 422
    assert "image_uris[0]" in response.json()["detail"] and "127.0.0.1" in response.json()["detail"]


def test_remote_images_can_be_turned_off(engine, tmp_path, server):
    _, client = make_client(engine, rest_settings(tmp_path, allow_remote_images=False))
    response = client.post(GEN, json={"prompt": "x", "image_uris": [f"{server.url}/image.png"]}, headers=AUTH)
    assert response.json()["detail"].startswith("image_uris[0]: remote image URLs are turned off")


@pytest.mark.parametrize("path,message", [("/missing", "answered HTTP 404"), ("/loop", "too many redirects")])
def test_fetch_failures_are_422(client, server, path, message):
    response = client.post(GEN, json={"prompt": "x", "image_uris": [server.url + path]}, headers=AUTH)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_byte_limit_and_timeout(server):
    policy = UrlPolicy(allow_private=True, timeout=0.5)
    with pytest.raises(InvalidRequest, match="over the limit of 100 bytes"):
        fetch_bytes(f"{server.url}/image.png", "f", policy, max_bytes=100)
    with pytest.raises(InvalidRequest, match="could not fetch"):
        fetch_bytes(f"{server.url}/slow", "f", policy, max_bytes=Limits().max_image_bytes)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254",
                                     "224.0.0.1", "0.0.0.0", "100.64.0.1", "::1", "fe80::1", "::ffff:127.0.0.1",
                                     "fc00::1", "240.0.0.1",
                                     "2002:7f00:1::", "2002:a00:1::",  # 6to4 around 127.0.0.1, 10.0.0.1
                                     "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 around loopback, metadata
                                     "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo (client 192.0.2.45)
                                     "2001:0:4136:e378:8000:63bf:f7f7:f7f7"])  # Teredo, public client: refused too
def test_non_public_addresses(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::",
                                     "64:ff9b::808:808"])
def test_public_addresses(address):
    assert is_public(address)


@pytest.mark.parametrize("url,message", [
    ("file:///etc/passwd", "must be an http:// or https:// URL"),
    ("ftp://example.com/x.png", "must be an http:// or https:// URL"),
    ("http://127.0.0.1/x.png", "resolves to a private"),
    ("http://localhost:8080/x.png", "resolves to a private"),
    ("http://[::1]/x.png", "resolves to a private"),
    ("http://169.254.169.254/latest/meta-data", "resolves to a private"),
    ("http://host.invalid/x.png", "could not be resolved"),
])
def test_check_url_refuses(url, message):
    with pytest.raises(InvalidRequest, match=message):
        check_url(url, "image_uris[0]", UrlPolicy())


def test_redirect_to_a_private_address_is_refused_at_each_hop(server, monkeypatch):
    # Pretend 127.0.0.1 is public so the first hop passes; the redirect to 127.0.0.2 must be checked again.
    monkeypatch.setattr("klein.rest.remote.is_public", lambda address: address == "127.0.0.1")
    port = server.url.rsplit(":", 1)[1]
    policy = UrlPolicy(allow_private=False)
    assert fetch_bytes(f"{server.url}/image.png", "f", policy, max_bytes=10_000) == IMAGE
    with pytest.raises(InvalidRequest, match="private, loopback or reserved address \\(127.0.0.2\\)"):
        fetch_bytes(f"{server.url}/to-private?port={port}", "f", policy, max_bytes=10_000)


def test_connection_goes_to_the_checked_address():
    target = check_url("http://127.0.0.1:9/x.png?a=1", "f", UrlPolicy(allow_private=True))
    args = target.request_args()
    assert str(args["url"]) == "http://127.0.0.1:9/x.png?a=1" and args["headers"] == {"Host": "127.0.0.1:9"}
    secure = check_url("https://localhost/x", "f", UrlPolicy(allow_private=True)).request_args()
    assert secure["extensions"] == {"sni_hostname": "localhost"} and secure["headers"] == {"Host": "localhost"}


def test_an_ipv6_literal_keeps_its_brackets_in_the_host_header():
    args = check_url("http://[::1]:9/x.png", "f", UrlPolicy(allow_private=True)).request_args()
    assert args["headers"] == {"Host": "[::1]:9"}


def test_a_slow_dns_lookup_is_refused_at_the_timeout(monkeypatch):
    import time

    monkeypatch.setattr("klein.rest.remote.socket.getaddrinfo", lambda *args, **kwargs: time.sleep(1))
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="image_uris\\[0\\]: 'http://slow.example/x.png': looking up"):
        check_url("http://slow.example/x.png", "image_uris[0]", UrlPolicy(timeout=0.3))
    assert time.monotonic() - started < 2
