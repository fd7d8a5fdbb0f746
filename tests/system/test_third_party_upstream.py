"""Fidelity against an HTTP server nobody here wrote: httpbin served by gunicorn, a real process.

What the upstream receives, and what comes back, must be what was sent — minus exactly the headers
the gateway is meant to change.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateways import Gateway, GatewayFactory, route
from tests.support.processes import Processes, free_port, wait_for_port

# Headers the gateway sets or replaces on the way up; everything else must arrive untouched.
GATEWAY_SET = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}


@pytest.fixture
def httpbin(tmp_path: Path, processes: Processes) -> Iterator[str]:
    port = free_port()
    proc = processes.start(
        "httpbin",
        ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "httpbin:app"],
        tmp_path,
        dict(os.environ),
    )
    wait_for_port(port, proc, timeout=30)
    yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def gw(start_gateway: GatewayFactory, httpbin: str) -> Gateway:
    gateway: Gateway = await start_gateway(
        upstream_url=httpbin,
        routes=[route("/anything/**", "public"), route("/headers"), route("/**", "public")],
        demo_user=True,
    )
    return gateway


def lower_keys(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


SENT = {
    "Content-Type": "text/plain; charset=utf-8",
    "X-Custom": "value with  spaces",
    "Accept": "text/plain",
    "Accept-Encoding": "gzip",
    "User-Agent": "fidelity-test/1.0",
    "Cookie": "a=1; b=2",
    "X-Multi": "one",
}


async def test_request_arrives_as_sent(gw: Gateway, httpbin: str) -> None:
    body = "héllo\nworld" * 100
    async with aiohttp.ClientSession() as direct:
        async with direct.post(
            f"{httpbin}/anything/x/y?b=2&a=1", data=body.encode(), headers=SENT
        ) as r:
            straight = await r.json()
    through = await (
        await gw.client.post("/anything/x/y?b=2&a=1", data=body.encode(), headers=SENT)
    ).json()
    assert through["method"] == straight["method"] == "POST"
    assert through["args"] == straight["args"] == {"a": "1", "b": "2"}
    assert through["data"] == straight["data"] == body
    assert through["url"].endswith("/anything/x/y?b=2&a=1")

    direct_headers = lower_keys(straight["headers"])
    gateway_headers = lower_keys(through["headers"])
    untouched = {k: v for k, v in direct_headers.items() if k not in GATEWAY_SET}
    assert {k: v for k, v in gateway_headers.items() if k not in GATEWAY_SET} == untouched
    assert set(gateway_headers) - set(direct_headers) <= GATEWAY_SET
    # (httpbin hides X-Forwarded-* and X-Request-Id from its echo; test_forwarding checks them.)


async def test_protected_upstream_sees_identity_not_credentials(gw: Gateway) -> None:
    pair = await gw.login()
    resp = await gw.client.get(
        "/headers",
        headers={
            "Authorization": f"Bearer {pair['access_token']}",
            "X-User-Id": "666",
            "X_User_Name": "mallory",
        },
    )
    headers = lower_keys((await resp.json())["headers"])
    assert "authorization" not in headers
    assert headers["x-user-id"] == "1"
    assert headers["x-user-name"] == "guang"
    assert "x_user_name" not in headers


@pytest.mark.parametrize(
    "path",
    [
        "/status/418",
        "/status/204",
        "/response-headers?X-Foo=bar&X-Foo=baz&Cache-Control=no-cache",
        "/html",
        "/image/png",
        "/range/3000?duration=0",
        "/base64/SFRUUEJJTiBpcyBhd2Vzb21l",
        "/stream-bytes/200000?seed=7&chunk_size=1000",
        "/bytes/5000?seed=3",
        "/redirect-to?url=/get&status_code=307",
        "/cookies/set?k=v",
        "/encoding/utf8",
    ],
)
async def test_responses_come_back_unchanged(gw: Gateway, httpbin: str, path: str) -> None:
    async def fetch(session: Any, url: str) -> tuple[int, list[tuple[str, str]], bytes]:
        async with session.get(url, allow_redirects=False, auto_decompress=False) as r:
            ignored = {
                "date",
                "server",
                "connection",
                "transfer-encoding",
                "keep-alive",
                "x-request-id",
            }
            headers = sorted(
                (k.lower(), v) for k, v in r.headers.items() if k.lower() not in ignored
            )
            return r.status, headers, await r.read()

    async with aiohttp.ClientSession(auto_decompress=False) as direct:
        straight = await fetch(direct, f"{httpbin}{path}")
    through = await fetch(gw.client, path)
    assert through == straight


@pytest.mark.parametrize(
    ("path", "flag", "decompress"),
    [("/gzip", "gzipped", gzip.decompress), ("/deflate", "deflated", zlib.decompress)],
)
async def test_compressed_responses_pass_through_untouched(
    gw: Gateway, path: str, flag: str, decompress: Callable[[bytes], bytes]
) -> None:
    resp = await gw.client.get(path, auto_decompress=False)
    raw = await resp.read()
    assert resp.headers["Content-Encoding"] == path.strip("/")
    assert resp.headers["Content-Length"] == str(len(raw))
    assert json.loads(decompress(raw))[flag] is True


async def test_head_and_methods(gw: Gateway) -> None:
    head = await gw.client.head("/get")
    assert head.status == 200
    assert await head.read() == b""
    for method in ("PUT", "PATCH", "DELETE"):
        resp = await gw.client.request(method, "/anything", data=b"x")
        assert (await resp.json())["method"] == method
