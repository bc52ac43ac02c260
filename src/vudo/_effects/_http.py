"""HTTP_GET and HTTP_POST through httpx, to allow-listed hosts only.

This module is the only one that imports httpx; the standard handler imports it on the first
HTTP effect, so ``import vudo`` does not pay for httpx.
"""

from __future__ import annotations

import threading
import time
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from .._config.permissions import Permissions
from ..abi import ResultCode
from ._outcome import Failed, Invalid, Refused
from ._queue import Job
from ._wire import U32, encode_result, split_prefixed

__all__ = ["HttpClient", "http_get", "http_post"]


class HttpClient:
    """One lazily created httpx client shared by a handler's HTTP effects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def get(self) -> httpx.Client:
        """The client, created on first use."""
        with self._lock:
            if self._client is None:
                # No redirects (they could leave the allow-list), no proxies/.netrc from the
                # environment, and a cookie jar that keeps nothing so Spirits share no state.
                self._client = httpx.Client(
                    follow_redirects=False,
                    trust_env=False,
                    cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
                    headers={"user-agent": "vudo"},
                )
            return self._client

    def close(self) -> None:
        """Close the client, if one was created."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def http_get(perms: Permissions, payload: bytes, client: HttpClient, cap: int | None) -> Job:
    """Check an HTTP_GET payload (the URL) and return the job performing the request."""
    return _http_job(perms, "GET", payload, None, client, cap)


def http_post(perms: Permissions, payload: bytes, client: HttpClient, cap: int | None) -> Job:
    """Check an HTTP_POST payload (``[url_len][url][body]``) and return the job."""
    raw_url, body = split_prefixed(payload, "URL")
    return _http_job(perms, "POST", raw_url, body, client, cap)


def _http_job(
    perms: Permissions,
    method: str,
    raw_url: bytes,
    body: bytes | None,
    client: HttpClient,
    message_cap: int | None,
) -> Job:
    url = _check_url(perms, raw_url)
    timeout = perms.http_timeout
    cap, what = perms.http_max_response, "http_max_response"
    if message_cap is not None and message_cap - 8 < cap:  # 4 status + 4 HTTP status bytes
        cap, what = max(message_cap - 8, 0), "max_message_size"
    headers = {"content-type": "application/octet-stream"} if body is not None else None
    too_big = Failed(ResultCode.BUFFER_TOO_SMALL, f"response exceeds {what} ({cap} bytes)")

    def job() -> bytes:
        deadline = time.monotonic() + timeout
        try:
            with client.get().stream(
                method, url, content=body, headers=headers, timeout=httpx.Timeout(timeout)
            ) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise too_big
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise too_big
                    # httpx times single operations; this bounds a slowly dripping body.
                    if time.monotonic() > deadline:
                        raise Failed(ResultCode.TIMEOUT, f"HTTP request took over {timeout}s")
                    chunks.append(chunk)
                status = response.status_code
        except httpx.TimeoutException as exc:
            raise Failed(ResultCode.TIMEOUT, f"HTTP timeout: {exc}") from None
        except httpx.HTTPError as exc:
            raise Failed(ResultCode.ERROR, f"HTTP error: {type(exc).__name__}: {exc}") from None
        return encode_result(ResultCode.OK, U32.pack(status) + b"".join(chunks))

    return job


def _check_url(perms: Permissions, raw: bytes) -> httpx.URL:
    try:
        text = raw.decode("utf-8")
        url = httpx.URL(text)
    except (UnicodeDecodeError, httpx.InvalidURL, ValueError, TypeError) as exc:
        raise Invalid(f"bad URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise Invalid(f"URL scheme must be http or https: {text!r}")
    if not url.host:
        raise Invalid(f"URL has no host: {text!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    if not perms.allows_host(url.host.lower(), port):
        raise Refused(f"host {url.host}:{port} is not on the HTTP allow-list")
    return url
