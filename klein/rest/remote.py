"""Safe outbound HTTP for image URLs and webhooks: public addresses only, pinned, bounded.

A URL is refused unless it is http(s) and every address its host resolves to is public (not
private, loopback, link-local, multicast, reserved...), unless the policy allows private ones
(tests). The connection goes to the address that was checked (the Host header and TLS SNI keep
the name), so a DNS answer that changes between check and connect cannot reach a private host.
Redirects are followed by hand and each hop is checked again. URLs are logged and shown only as
`redact_url` writes them (signed URLs and webhook tokens keep their secrets in the query string).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from ..config import Limits
from ..errors import InvalidRequest
from ..images import decode_base64, load_reference

REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class UrlPolicy:
    """Where outbound requests may go and how long they may take."""

    allow_private: bool = False
    timeout: float = 10.0
    max_redirects: int = 5


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and the name the server knows itself by."""

    url: httpx.URL
    pinned: httpx.URL
    host_header: str

    def request_args(self) -> dict[str, Any]:
        extensions = {"sni_hostname": self.url.host} if self.url.scheme == "https" else {}
        return {"url": self.pinned, "headers": {"Host": self.host_header}, "extensions": extensions}


NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo cannot time out by itself; lookups run here so a slow resolver costs the request, not a thread.
_resolver = ThreadPoolExecutor(max_workers=16, thread_name_prefix="klein-dns")


class RedactedUrls(logging.Filter):
    """httpx logs every request's URL at INFO, query string included; this logs it as redact_url writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


logging.getLogger("httpx").addFilter(RedactedUrls())


def is_public(address: str) -> bool:
    """A globally routable unicast address, also for IPv6 forms that carry an IPv4 one inside."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo:
            return False  # a tunnel through a relay: refused, as it always was
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def check_url(url: str, field: str, policy: UrlPolicy) -> Target:
    """Parse, resolve and check `url`; raises InvalidRequest naming `field` when it may not be used."""
    shown = redact_url(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InvalidRequest(field, f"{shown!r} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(field, f"{shown!r} must be an http:// or https:// URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    lookup = _resolver.submit(socket.getaddrinfo, parsed.host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=policy.timeout)
    except FutureTimeout:
        lookup.cancel()  # still queued: never runs; already running: its worker finishes on its own
        raise InvalidRequest(field, f"{shown!r}: looking up the host {parsed.host!r} took too long") from None
    except (socket.gaierror, UnicodeError):
        raise InvalidRequest(field, f"{shown!r}: the host {parsed.host!r} could not be resolved") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not policy.allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise InvalidRequest(
                field, f"{shown!r} resolves to a private, loopback or reserved address ({refused[0]}); refused"
            )
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host  # an IPv6 literal keeps its brackets
    netloc = host if parsed.port is None else f"{host}:{parsed.port}"
    return Target(parsed, parsed.copy_with(host=addresses[0].split("%")[0]), netloc)


def fetch_bytes(url: str, field: str, policy: UrlPolicy, max_bytes: int) -> bytes:
    """GET `url` safely: checked hops, at most `max_bytes`, within `policy.timeout` seconds in all."""
    deadline = time.monotonic() + policy.timeout
    with httpx.Client(timeout=policy.timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            target = check_url(url, field, policy)
            try:
                with client.stream("GET", **target.request_args()) as response:
                    if response.status_code in REDIRECTS and "location" in response.headers:
                        url = str(target.url.join(response.headers["location"]))
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(field, f"fetching {redact_url(url)!r} answered HTTP {response.status_code}")
                    return _read_limited(response, field, max_bytes, deadline)
            except httpx.HTTPError as exc:
                raise InvalidRequest(field, f"could not fetch {redact_url(url)!r} ({type(exc).__name__})") from None
    raise InvalidRequest(field, f"too many redirects (more than {policy.max_redirects})")


def _read_limited(response: httpx.Response, field: str, max_bytes: int, deadline: float) -> bytes:
    too_big = f"image is over the limit of {max_bytes:,} bytes"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InvalidRequest(field, too_big)
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise InvalidRequest(field, too_big)
        if time.monotonic() > deadline:
            raise InvalidRequest(field, "fetching the image took too long")
        chunks.append(chunk)
    return b"".join(chunks)


def load_text_reference(
    value: str, field: str, limits: Limits, policy: UrlPolicy, allow_remote: bool = True
) -> Image.Image:
    """A reference image given as text (see reference_bytes), decoded and checked."""
    return load_reference(reference_bytes(value, field, limits, policy, allow_remote), field, limits)


def reference_bytes(value: str, field: str, limits: Limits, policy: UrlPolicy, allow_remote: bool = True) -> bytes:
    """The bytes of a reference image given as an http(s) URL, a base64 data URI, or bare base64.

    Never a file path: text from a client must not read files on this machine.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(field, "is empty; give a URL, a data URI or base64 image data")
    value = value.strip()
    if value.lower().startswith(("http://", "https://")):
        if not allow_remote:
            raise InvalidRequest(field, "remote image URLs are turned off on this server; send the image data")
        return fetch_bytes(value, field, policy, limits.max_image_bytes)
    return decode_base64(value, field, limits, expected="a URL, a data URI or valid base64 image data")


def redact_url(url: str, limit: int = 200) -> str:
    """`url` as it may be logged or shown: without userinfo, query string and fragment, where signed URLs
    and webhook tokens keep their secrets (`https://user:pass@host/p?sig=...` -> `https://host/p`)."""
    text = str(url).split("#", 1)[0].split("?", 1)[0]
    scheme, separator, rest = text.partition("://")
    if separator:
        authority, slash, path = rest.partition("/")
        text = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return text if len(text) <= limit else text[:limit] + "..."
