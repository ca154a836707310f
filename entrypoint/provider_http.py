"""The one HTTP layer for the providers' control APIs, on the pod (the stop action) and the laptop (`podvisor
cloud`): a requests session whose key goes only in the Authorization header, retried by urllib3's Retry on 429
and 502-504 (honouring Retry-After) for idempotent calls only, and a provider's error body read as one line.

A call that creates something (a pod, a rented instance, a template) is never repeated blindly: a retry after a
lost answer could rent twice; the caller looks it up by its name or label instead.
"""
from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRIED_STATUSES = (429, 502, 503, 504)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
"""PATCH here sets fields to given values: repeating it changes nothing more."""


def session(key: str, attempts: int = 4, backoff: float = 0.5,
            also_retry: frozenset[str] = frozenset()) -> requests.Session:
    """A session that sends `key` as `Authorization: Bearer` and retries the idempotent methods (plus
    `also_retry`, for a POST that is safe to repeat such as a pod's stop action) on RETRIED_STATUSES and on
    connection errors, `attempts` tries in all with exponential backoff, or as long as Retry-After asks."""
    retry = Retry(total=attempts - 1, connect=attempts - 1, read=attempts - 1, status=attempts - 1,
                  backoff_factor=backoff, status_forcelist=RETRIED_STATUSES,
                  allowed_methods=IDEMPOTENT | also_retry, respect_retry_after_header=True,
                  raise_on_status=False)
    client = requests.Session()
    client.mount("https://", HTTPAdapter(max_retries=retry))
    client.mount("http://", HTTPAdapter(max_retries=retry))
    client.headers["Authorization"] = f"Bearer {key}"
    client.headers["User-Agent"] = "podvisor"
    return client


def problem(response: requests.Response, secret: str = "") -> str:
    """What the provider said, in one line: an RFC 9457 problem's title and detail (RunPod v2), else a
    `msg`/`message`/`error` field (Vast, RunPod v1), else the body's start; `secret` never shown."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("title") or body.get("detail")):
        said = ": ".join(str(body[k]) for k in ("title", "detail") if body.get(k))
        if body.get("errors"):
            said += " (" + "; ".join(map(str, body["errors"]))[:200] + ")"
    elif isinstance(body, dict) and any(body.get(k) for k in ("msg", "message", "error")):
        said = str(next(body[k] for k in ("msg", "message", "error") if body.get(k)))
    else:
        said = response.text.strip()
    said = " ".join(said.split())[:300]
    return said.replace(secret, "***") if secret else said
