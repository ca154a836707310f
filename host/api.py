"""One HTTP client per provider: the key goes only in the Authorization header, only to that provider's API
host, and never into a URL, a log line or an exception; refusals and outages become one line a user can act on."""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import requests

from entrypoint.provider_http import problem, session
from host.keys import ApiKey

TIMEOUT = (10, 60)


class ApiError(Exception):
    """One line: what was asked, what the provider said, and what to do."""


class Refused(ApiError):
    """401/403: the key is wrong, expired, or lacks the permission this call needs."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, provider: str, key: ApiKey, hint: str) -> None:
        self.provider, self.key, self.hint = provider, key, hint
        self.session = session(key.value)
        self.once = session(key.value, attempts=1)

    def call(self, method: str, url: str, body: Any = None, params: dict[str, str] | None = None,
             retry: bool = True) -> Any:
        """One call; `retry=False` for one that creates something under an idempotent verb (Vast rents with a
        PUT): sent once, whatever answers."""
        where = f"{method} {urlsplit(url).path}"
        try:
            response = (self.session if retry else self.once).request(method, url, json=body, params=params,
                                                                      timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise self._unreachable(url, exc) from None
        self._check(response, where)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise ApiError(f"{self.provider} answered {where} with something that is not JSON") from None

    def events(self, url: str, params: dict[str, str], quiet: float) -> list[dict]:
        """A Server-Sent Events stream's `data:` payloads (JSON), read until the stream ends or says nothing for
        `quiet` seconds: a log stream sends its backlog at once, then waits for new lines."""
        where = f"GET {urlsplit(url).path}"
        found: list[dict] = []
        try:
            with self.session.get(url, params=params, stream=True, timeout=(TIMEOUT[0], quiet),
                                  headers={"Accept": "text/event-stream"}) as response:
                self._check(response, where)
                response.encoding = "utf-8"  # Server-Sent Events are UTF-8 whatever the header says
                for line in response.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        try:
                            found.append(json.loads(line[5:].strip()))
                        except ValueError:
                            continue
        except requests.ConnectionError as exc:  # the read timeout of a quiet stream, once it has begun
            if not found and "timed out" not in str(exc).lower():
                raise self._unreachable(url, exc) from None
        except requests.Timeout:
            pass
        return found

    def _check(self, response: requests.Response, where: str) -> None:
        """A refused key or any other failure, as one line: what was asked, what the provider said, what to do."""
        if response.status_code in (401, 403):
            raise Refused(f"{self.provider} refused the API key from {self.key.source} (HTTP {response.status_code} "
                          f"on {where}): {self.hint}", response.status_code)
        if response.status_code >= 300:
            raise ApiError(f"{self.provider} answered HTTP {response.status_code} on {where}: "
                           f"{problem(response, self.key.value)}")

    def _unreachable(self, url: str, exc: Exception) -> ApiError:
        return ApiError(f"{self.provider} API unreachable at {urlsplit(url).netloc} ({type(exc).__name__}); "
                        "check the network or the API URL")

