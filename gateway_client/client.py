"""A Python client for services behind the gateway that refreshes silently.

    async with GatewayClient("http://127.0.0.1:8080") as client:
        await client.login("alice", "secret")
        response = await client.get("/bbb")        # 401s are refreshed and replayed for you

Semantics (the same as the browser module's):
- the access token is attached when a request is sent, not when it is queued;
- a 401 that says the token is invalid or expired starts one refresh however many requests fail
  together; each waiting request is replayed once with the new token. A request that was sent
  with an older token than the current one is replayed without another refresh;
- a refresh refused with 401 means the session is over: every waiting request gets
  `LoginRequired`, the tokens are cleared and `on_login_required` is called once. A transient
  failure (network, 5xx) gives the waiters `RefreshFailed` and keeps the refresh token;
- 403 never refreshes; a request whose body cannot be sent twice (a stream) is not replayed;
- with `refresh_ahead`, a token is refreshed that many seconds before it expires, measured from the
  server's `expires_in` on this machine's monotonic clock (not by comparing wall clocks);
- `logout()` ends the session at the gateway, clears the tokens, and discards a refresh in flight;
  `logout_everywhere()` ends every session of the user (other devices too) and does the same;
- `sessions()` lists the user's live sessions, `end_session(id)` ends one of them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import GatewayClientError, LoginRequired, RefreshFailed
from .token_store import MemoryTokenStore, Tokens, TokenStore

__all__ = ["GatewayClient"]


@dataclass(frozen=True, slots=True)
class _Sent:
    """What a request carried, to tell an old token's 401 from the current one's."""

    generation: int


class GatewayClient:
    """An aiohttp-based client that logs in, attaches tokens and refreshes silently."""

    def __init__(
        self,
        base_url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        store: TokenStore | None = None,
        on_login_required: Callable[[], Awaitable[None] | None] | None = None,
        refresh_ahead: float | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._store = store or MemoryTokenStore()
        self._on_login_required = on_login_required
        self._refresh_ahead = refresh_ahead
        # Bumped whenever the tokens change: a 401 for an older generation needs no refresh.
        self._generation = 0
        self._refreshing: asyncio.Task[Tokens] | None = None
        self._login_required_notified = False
        self.refresh_count = 0

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def tokens(self) -> Tokens | None:
        return self._store.load()

    async def login(self, username: str, password: str) -> Tokens:
        """Log in; raises LoginRequired when the credentials are refused."""
        async with self._http.post(
            f"{self._base}/user/login", json={"username": username, "password": password}
        ) as resp:
            body = await _json(resp)
            if resp.status == 401:
                raise LoginRequired(str(body.get("message", "Invalid username or password")))
            if resp.status != 200:
                raise GatewayClientError(f"login failed: {resp.status} {body.get('message')}")
        tokens = self._tokens_from(body)
        self._set_tokens(tokens)
        self._login_required_notified = False
        return tokens

    async def logout(self) -> None:
        """End the session at the gateway (best effort) and forget the tokens."""
        tokens = self._store.load()
        # A refresh in flight is not cancelled (its waiters would see a cancellation); the new
        # generation makes its result void, and its waiters get LoginRequired.
        self._refreshing = None
        self._store.clear()
        self._generation += 1
        if tokens is None:
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._http.post(
                f"{self._base}/user/logout", json={"refresh_token": tokens.refresh_token}
            ) as resp:
                await resp.read()

    async def sessions(self) -> list[dict[str, Any]]:
        """The user's live sessions (id, created_at, last_used_at, login, last_refresh,
        current), oldest first."""
        body = await self._account_call("GET", "/user/sessions")
        sessions = body.get("sessions")
        return sessions if isinstance(sessions, list) else []

    async def end_session(self, session_id: str) -> None:
        """End one of the user's sessions; GatewayClientError when there is no such one."""
        await self._account_call("DELETE", f"/user/sessions/{session_id}")
        tokens = self._store.load()
        if tokens is not None and _session_of(tokens.access_token) == session_id:
            self._forget()  # this client's own: its tokens are dead now

    async def logout_everywhere(self) -> int:
        """End every session of the user, this one included; return how many ended."""
        body = await self._account_call("POST", "/user/logout", json={"all": True})
        self._forget()
        ended = body.get("ended")
        return ended if isinstance(ended, int) else 0

    async def _account_call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self._store.load() is None:
            raise LoginRequired("Login required")
        resp = await self.request(method, path, **kwargs)
        body = await _json(resp)
        if resp.status == 401:
            raise LoginRequired(str(body.get("message", "Login required")))
        if resp.status != 200:
            raise GatewayClientError(f"{method} {path} failed: {resp.status} {body.get('message')}")
        return body

    def _forget(self) -> None:
        self._refreshing = None
        self._store.clear()
        self._generation += 1

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", path, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        """Send a request with the current token; refresh and replay once on an invalid token.

        The returned response's body has been read (`await resp.text()` / `.json()` work).
        """
        if self._refresh_ahead is not None:
            await self._refresh_if_expiring()
        response, body, sent = await self._send(method, path, kwargs)
        if sent is None or not _token_refused(response, body):
            return response
        if not _replayable(kwargs):
            return response  # a stream cannot be sent twice: the caller gets the 401
        if sent.generation == self._generation:
            await self._refresh(sent.generation)
        elif self._store.load() is None:
            raise LoginRequired("Login required")  # the session ended while this was out
        replay, _, _ = await self._send(method, path, kwargs)
        return replay

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _send(
        self, method: str, path: str, kwargs: Mapping[str, Any]
    ) -> tuple[aiohttp.ClientResponse, bytes, _Sent | None]:
        tokens = self._store.load()
        headers = dict(kwargs.get("headers") or {})
        sent = None
        if tokens is not None:
            headers["Authorization"] = f"Bearer {tokens.access_token}"
            sent = _Sent(self._generation)
        options = {**kwargs, "headers": headers}
        response = await self._http.request(method, self._url(path), **options)
        body = await response.read()
        response.release()
        return response, body, sent

    async def _refresh(self, generation: int) -> Tokens:
        """One refresh for any number of callers that saw the same token fail."""
        if self._refreshing is None or self._refreshing.done():
            if generation != self._generation:
                tokens = self._store.load()
                if tokens is None:
                    raise LoginRequired("Login required")
                return tokens
            self._refreshing = asyncio.create_task(self._do_refresh(self._generation))
        return await asyncio.shield(self._refreshing)

    async def _do_refresh(self, generation: int) -> Tokens:
        tokens = self._store.load()
        if tokens is None:
            await self._login_required()
            raise LoginRequired("Login required")
        try:
            async with self._http.post(
                f"{self._base}/user/refresh", json={"refresh_token": tokens.refresh_token}
            ) as resp:
                body = await _json(resp)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RefreshFailed(f"refresh failed: {exc!r}") from exc
        if generation != self._generation:
            # A logout (or another login) happened meanwhile: this refresh is void.
            raise LoginRequired("Logged out")
        if status in (400, 401):
            self._store.clear()
            self._generation += 1
            await self._login_required()
            raise LoginRequired(str(body.get("message", "Login required")))
        if status != 200:
            raise RefreshFailed(f"refresh failed: {status} {body.get('message')}")
        self.refresh_count += 1
        renewed = self._tokens_from(body)
        self._set_tokens(renewed)
        return renewed

    async def _refresh_if_expiring(self) -> None:
        tokens = self._store.load()
        if tokens is None or tokens.access_expires_at is None or self._refresh_ahead is None:
            return
        if time.monotonic() >= tokens.access_expires_at - self._refresh_ahead:
            await self._refresh(self._generation)

    async def _login_required(self) -> None:
        if self._login_required_notified or self._on_login_required is None:
            return
        self._login_required_notified = True
        result = self._on_login_required()
        if result is not None:
            await result

    def _set_tokens(self, tokens: Tokens) -> None:
        self._store.save(tokens)
        self._generation += 1

    def _tokens_from(self, body: Mapping[str, Any]) -> Tokens:
        expires_in = body.get("expires_in")
        deadline = time.monotonic() + float(expires_in) if isinstance(expires_in, int) else None
        return Tokens(str(body["access_token"]), str(body["refresh_token"]), deadline)

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self._base}{path}"


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _token_refused(response: aiohttp.ClientResponse, body: bytes) -> bool:
    """A 401 about the token (not a 403, not some other error)."""
    if response.status != 401:
        return False
    if 'error="invalid_token"' in response.headers.get("WWW-Authenticate", ""):
        return True
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("statusCode") == 401


def _session_of(access_token: str) -> str | None:
    """The `sid` claim of a token, read without verifying it (only to compare with an id)."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    sid = claims.get("sid") if isinstance(claims, dict) else None
    return sid if isinstance(sid, str) else None


def _replayable(kwargs: Mapping[str, Any]) -> bool:
    data = kwargs.get("data")
    return data is None or isinstance(data, bytes | str | dict | aiohttp.FormData)
