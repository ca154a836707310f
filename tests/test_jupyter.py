"""A real Jupyter Lab under supervisord, as the login user, behind its token."""
from __future__ import annotations

import os

from pathlib import Path

import pytest
import requests

from conftest import base_env, free_port, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="running as the login user needs root")
TOKEN = "jupyter-secret-7f3a"


def _env(root, port, **extra):
    return base_env(root / "state", PODVISOR_BIND_HOST="127.0.0.1", SSH_ENABLED="false", SSH_USER="pvtest",
                    JUPYTER_PORT=str(port), JUPYTER_ROOT_DIR=str(root / "work"), **extra)


def _status(port, token=None):
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        return requests.get(f"http://127.0.0.1:{port}/api/status", headers=headers, timeout=5).status_code
    except requests.ConnectionError:
        return None


@pytest.mark.parametrize("variable", ["JUPYTER_TOKEN", "JUPYTER_PASSWORD"])
def test_token_is_required(open_tmp, stack_factory, variable):
    port = free_port()
    stack = stack_factory(_env(open_tmp, port, **{variable: TOKEN}))
    wait_for(lambda: _status(port, TOKEN) == 200, 90, 0.5, lambda: f"jupyter up\n{stack.output}")
    assert _status(port) == 403
    assert _status(port, "wrong-token") == 403
    jupyter = stack.status()["services"]["jupyter"]
    assert jupyter["ready"] is True
    import psutil
    proc = psutil.Process(jupyter["pid"])
    assert proc.username() == "pvtest"
    assert TOKEN not in " ".join(proc.cmdline()), "the token must not show in ps"
    assert TOKEN not in stack.output
    # Jupyter's runtime files that hold the token are the login user's alone (its browser-open file was 0644).
    import pwd
    runtime = Path(pwd.getpwnam("pvtest").pw_dir) / ".local" / "share" / "jupyter" / "runtime"
    written = {f.name: f.stat().st_mode & 0o777 for f in runtime.glob(f"jpserver-{proc.pid}*")}
    assert f"jpserver-{proc.pid}.json" in written, written
    assert written == {f"jpserver-{proc.pid}.json": 0o600, f"jpserver-{proc.pid}-open.html": 0o600}, written
    assert stack.stop() == 0


def _password_login(port, password) -> int:
    """Jupyter's login page as a browser uses it: the form with its _xsrf cookie, then the API with the session."""
    with requests.Session() as browser:
        browser.get(f"http://127.0.0.1:{port}/login", timeout=5)
        browser.post(f"http://127.0.0.1:{port}/login", timeout=5, allow_redirects=False,
                     data={"password": password, "_xsrf": browser.cookies.get("_xsrf", "")})
        return browser.get(f"http://127.0.0.1:{port}/api/status", timeout=5).status_code


def test_a_token_and_a_plain_text_password_both_work(open_tmp, stack_factory):
    port, password = free_port(), "my-own-password-4b2e"
    stack = stack_factory(_env(open_tmp, port, JUPYTER_TOKEN=TOKEN, JUPYTER_PASSWORD=password))
    wait_for(lambda: _status(port, TOKEN) == 200, 90, 0.5, lambda: f"jupyter up\n{stack.output}")
    assert _password_login(port, password) == 200
    assert _password_login(port, "not-the-password") == 403
    assert "or log in with your JUPYTER_PASSWORD" in stack.status()["services"]["jupyter"]["summary"]
    assert password not in stack.output


def test_no_token_set_means_a_generated_one_that_status_points_to(open_tmp, stack_factory):
    port = free_port()
    stack = stack_factory(_env(open_tmp, port))
    token_file = open_tmp / "state" / "services" / "jupyter" / "token"
    wait_for(lambda: _status(port) == 403, 90, 0.5, lambda: f"jupyter up\n{stack.output}")
    token = token_file.read_text().strip()
    assert len(token) >= 32 and oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert _status(port, token) == 200
    jupyter = stack.status()["services"]["jupyter"]
    assert jupyter["ready"] is True
    assert f"cat {token_file}" in jupyter["summary"]
    assert token not in stack.output and f"cat {token_file}" in stack.output
    assert stack.stop() == 0


def test_a_state_dir_the_login_user_cannot_reach_disables_jupyter_with_the_reason(tmp_path, stack_factory):
    """pytest's tmp_path is closed to other users: Jupyter (as the login user) could not read its config and used
    to start with a token of its own, printed in the log, while podvisor's probes got 403."""
    port = free_port()
    stack = stack_factory(_env(tmp_path, port, UPLOAD_WATCH_DIRS=str(tmp_path / "ck"), INFERENCE_ENABLED="false"))
    jupyter = stack.wait_state("jupyter", "DISABLED")
    assert "the login user pvtest cannot read" in jupyter["reason"]
    assert "token=" not in stack.output.replace("token=***", "")
    assert stack.stop() == 0
