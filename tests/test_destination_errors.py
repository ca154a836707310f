"""Destinations say what kind of failure they had (a typed cause), which the uploader acts on: an unreachable
destination is probed until it answers. Checked on rclone's real JSON log lines and on the Hub client's own
exception classes."""
from __future__ import annotations

import json

import pytest

from services.uploader.destinations import Cause, DestinationError, VerifyError, cause_of
from services.uploader.destinations.hf import HfDestination
from services.uploader.destinations.rclone import failure


def _log(msg: str, level: str = "error") -> str:
    return json.dumps({"level": level, "msg": msg, "source": "slog/logger.go:256"}) + "\n"


@pytest.mark.parametrize("said, cause", [
    ('Failed to copy: RequestError: send request failed\ncaused by: Put "http://127.0.0.1:9/ckpt/a": dial tcp '
     '127.0.0.1:9: connect: connection refused', Cause.UNREACHABLE),
    ("dial tcp: lookup s3.nowhere.invalid: no such host", Cause.UNREACHABLE),
    ("Failed to copy: AccessDenied: Access Denied\n\tstatus code: 403", Cause.REFUSED),
    ("directory not found", Cause.NOT_FOUND),
    ("Failed to copy: NoSuchBucket: The specified bucket does not exist", Cause.NOT_FOUND),
    ("write: no space left on device", Cause.QUOTA),
    ("something new and strange", Cause.FAILED),
])
def test_rclone_failures_carry_their_cause(said, cause):
    error = failure(_log("Config file not found", "notice") + _log(said))
    assert error.cause is cause
    assert "Config file" not in str(error), "notices are not the failure"


def test_a_verify_error_is_a_corrupt_destination_and_anything_else_a_plain_failure():
    assert cause_of(VerifyError("size differs")) is Cause.CORRUPT
    assert cause_of(DestinationError("x", Cause.QUOTA)) is Cause.QUOTA
    assert cause_of(KeyError("a bug")) is Cause.FAILED


@pytest.mark.parametrize("status, cause", [(401, Cause.REFUSED), (403, Cause.REFUSED), (404, Cause.NOT_FOUND),
                                           (500, Cause.FAILED)])
def test_hub_http_errors_carry_their_cause(status, cause):
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_session

    transport = type(get_session())  # the HTTP library the Hub client uses (httpx, or httpx2 in newer releases)
    library = __import__(transport.__module__.split(".")[0])
    request = library.Request("GET", "https://hub.example/api/models/me/ckpts")
    response = library.Response(status, request=request)

    dest = HfDestination.from_uri("hf://me/ckpts", {"HF_TOKEN": "hf_canary_token_0123456789"})
    dest._api = type("Api", (), {"list_repo_tree": lambda *a, **k: (_ for _ in ()).throw(
        HfHubHTTPError("denied", response=response))})()
    with pytest.raises(DestinationError) as raised:
        dest.list_markers(5)
    assert raised.value.cause is cause
    assert f"HTTP {status}" in str(raised.value) and "hf_canary" not in str(raised.value)


def test_a_hub_that_refuses_the_connection_is_unreachable():
    from huggingface_hub.utils import get_session

    library = __import__(type(get_session()).__module__.split(".")[0])
    dest = HfDestination.from_uri("hf://me/ckpts", {})
    dest._api = type("Api", (), {"list_repo_tree": lambda *a, **k: (_ for _ in ()).throw(
        library.ConnectError("[Errno 111] Connection refused"))})()
    with pytest.raises(DestinationError) as raised:
        dest.list_markers(5)
    assert raised.value.cause is Cause.UNREACHABLE
