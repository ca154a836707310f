"""`podvisor config`: every malformed variable named with its fix, secrets never echoed."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess

import pytest

from conftest import PODVISOR, base_env
from entrypoint.cli import main

SECRET = "hf_SuperSecretValue_0123456789"

MALFORMED = [
    ("PODVISOR_GRACE_SECONDS", "soon", "a number"),
    ("PODVISOR_GRACE_SECONDS", "-5", ">= 0"),
    ("PODVISOR_GRACE_SECONDS", "99999", "<= 3600"),
    ("PODVISOR_PROVIDER", "aws", "one of"),
    ("PODVISOR_LOG_LEVEL", "loud", "one of"),
    ("PODVISOR_LOG_MAX_MB", "0", ">= 1"),
    ("PODVISOR_LOG_MAX_MB", "ten", "whole number"),
    ("PODVISOR_LOG_BACKUPS", "-1", ">= 0"),
    ("PODVISOR_STATE_DIR", "relative/state", "absolute path"),
    ("PODVISOR_WORKSPACE", "workspace", "absolute path"),
    ("PODVISOR_EXTRA_SERVICES", "/ok,relative", "absolute path"),
    ("SSH_USER", "Bad User!", "lowercase letters"),
    ("SSH_UID", "abc", "whole number"),
    ("SSH_UID", "0", ">= 1"),
    ("SSH_SUDO", "maybe", "true or false"),
    ("SSH_ENABLED", "yes please", "true or false"),
    ("SSH_PORT", "0", ">= 1"),
    ("SSH_PORT", "70000", "<= 65535"),
    ("SSH_PORT", "twenty-two", "whole number"),
    ("SSH_PERMIT_ROOT", "2", "true or false"),
    ("PUBLIC_KEY", "ssh-rsa notakey me@laptop", "not a valid public key"),
    ("SSH_AUTHORIZED_KEYS", "hello world", "not a valid public key"),
    ("JUPYTER_PORT", "99999", "<= 65535"),
    ("JUPYTER_ENABLED", "nope", "true or false"),
    ("JUPYTER_ROOT_DIR", "notebooks", "absolute path"),
    ("JUPYTER_BASE_URL", "lab", "starting with /"),
    ("JUPYTER_ALLOW_NO_AUTH", "sure", "true or false"),
    ("UPLOAD_DESTINATIONS", "ftp://host/dir", "not a destination URI"),
    ("UPLOAD_DESTINATIONS", "hf://only-a-name", "not a Hugging Face repo"),
    ("UPLOAD_DESTINATIONS", "s3://Bad_Bucket!", "no valid bucket name"),
    ("UPLOAD_SETTLE_SECONDS", "-1", ">= 0"),
    ("UPLOAD_WATCH_DIRS", "checkpoints", "absolute path"),
    ("AWS_ENDPOINT_URL", "localhost:9000", "not a URL"),
    ("AUTOSTOP_ACTION", "runpod,shutdown", "not a stop action"),
    ("AUTOSTOP_BUSY_PROCESSES", "train(", "not a regular expression"),
    ("AUTOSTOP_IDLE_MINUTES", "0", "> 0"),
    ("RUNPOD_GRAPHQL_URL", "api.runpod.io/graphql", "not a URL"),
    ("INFERENCE_DEVICE", "gpu", "auto, cpu, cuda or cuda:N"),
    ("INFERENCE_MAX_BATCH", "0", ">= 1"),
    ("INFERENCE_DTYPE", "int4", "one of"),
    ("INFERENCE_HANDLER", "just_a_module", "package.module:factory"),
    ("JOB_NPROC", "0", "auto or a number"),
    ("JOB_RESTART", "always", "one of"),
    ("JOB_RESUME_ARGS", "--resume", "{checkpoint}"),
    ("REPO_URL", "github.com/me/repo", "not a git URL"),
    ("HOOKS_STRICT", "perhaps", "true or false"),
    ("PODVISOR_BIND_HOST", "", "not an IP address"),
    ("PODVISOR_BIND_HOST", "999.1.1.1", "not an IP address"),
    ("PODVISOR_WORKSPACE", "/etc", "system folder"),
    ("PODVISOR_STATE_DIR", "/usr/local/state", "system folder"),
    ("INFERENCE_API_TOKEN", "0a1b2c3d4e5f60718293\nsecond-line", "line break"),
    ("PROVISIONING_SCRIPT", "provision.sh", "absolute path nor a URL"),
    ("PODVISOR_STATE_DIR", "", "is empty"),
    ("REPO_DIR", " ", "is empty"),
    ("PODVISOR_GRACE_SECONDS", "nan", "a finite number"),
    ("AUTOSTOP_IDLE_MINUTES", "inf", "a finite number"),
    ("SSH_PORT", "9" * 100_000, "(100000 characters)"),
    ("REPO_DIR", "r" * 5000, "(5000 characters)"),
    ("JUPYTER_BASE_URL", "/ü/", "characters a URL path cannot carry"),  # every page answered 404
    ("INFERENCE_MODEL_DIR", "models", "absolute path"),  # was resolved from supervisord's working directory
    ("INFERENCE_MODEL_PATH", "model.pt", "absolute path"),
    ("AUTOSTOP_HEARTBEAT_FILE", "alive", "absolute path"),
    ("JOB_WORKDIR", "src", "absolute path"),
    ("PRE_START_SCRIPT", "setup.sh", "absolute path"),
]

CLASHES = [  # errors that take more than one variable
    ({"SSH_PORT": "2200", "JUPYTER_PORT": "2200"}, "JUPYTER_PORT", "also SSH_PORT"),
    ({"JUPYTER_PORT": "8001", "INFERENCE_PORT": "8001"}, "INFERENCE_PORT", "also JUPYTER_PORT"),
]

WARNINGS = [  # accepted, with a warning: `config --check` exits 1
    ({"UPLOAD_DESTINATION": "s3://bucket/ck"}, "UPLOAD_DESTINATION", "did you mean UPLOAD_DESTINATIONS"),
    ({"JUPYTER_TOKN": "x"}, "JUPYTER_TOKN", "did you mean JUPYTER_TOKEN"),
    ({"AUTOSTOP_IDLE_MINUTE": "5"}, "AUTOSTOP_IDLE_MINUTE", "did you mean AUTOSTOP_IDLE_MINUTES"),
    ({"SSH_PORTS": "22"}, "SSH_PORTS", "did you mean SSH_PORT"),
    ({"JUPYTER_PORT": "tcp://10.96.0.9:8888"}, "JUPYTER_PORT", "Kubernetes service link"),
    ({"INFERENCE_PORT": "tcp://10.96.0.10:8000"}, "INFERENCE_PORT", "Kubernetes service link"),
    ({"HF_TOKEN": "hf_one_0123456789", "HUGGING_FACE_HUB_TOKEN": "hf_two_0123456789"}, "HUGGING_FACE_HUB_TOKEN",
     "another name for HF_TOKEN"),
    ({"CLOUD_PROVIDER": "runpod"}, "CLOUD_PROVIDER", "set PODVISOR_PROVIDER instead"),
    ({"START_INFERENCE_API": "false"}, "START_INFERENCE_API", "set INFERENCE_ENABLED instead"),
    ({"SSH_PORT": "2222", "ssh_port": "2200"}, "ssh_port", "SSH_PORT in other letters, set to another value; "
                                                           "SSH_PORT is used"),
]


def _check(tmp_path, **env) -> subprocess.CompletedProcess:
    """`podvisor config --check` in this process (the same entry point as the command, minus a Python start per
    case: ~60 cases): its environment swapped in whole, its output captured."""
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(base_env(tmp_path / "state", **env))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["config", "--check"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["podvisor", "config", "--check"], code, out.getvalue(), err.getvalue())


def test_defaults_are_valid(tmp_path):
    result = _check(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "config OK" in result.stdout
    command = subprocess.run([PODVISOR, "config", "--check"], env=base_env(tmp_path / "state"), capture_output=True,
                             text=True, timeout=60)
    assert (command.returncode, command.stdout) == (result.returncode, result.stdout), "the command says the same"


@pytest.mark.parametrize(("variable", "value", "expected"), MALFORMED)
def test_malformed_value_is_named_with_the_fix(tmp_path, variable, value, expected):
    result = _check(tmp_path, **{variable: value}, HF_TOKEN=SECRET, JUPYTER_TOKEN=SECRET)
    assert result.returncode == 2
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{variable}: ")]
    assert lines, result.stdout
    assert expected in lines[0] and "expected" in lines[0]
    assert lines[0].count(variable) == 1, "the name is said once"
    assert len(lines[0]) < 400, "a long value is cut, not echoed whole"
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(("env", "variable", "expected"), CLASHES)
def test_ports_two_services_would_share_are_errors(tmp_path, env, variable, expected):
    result = _check(tmp_path, **env)
    assert result.returncode == 2 and f"{variable}: " in result.stdout and expected in result.stdout, result.stdout


@pytest.mark.parametrize(("env", "variable", "expected"), WARNINGS)
def test_lookalikes_links_and_clashing_aliases_are_warnings(tmp_path, env, variable, expected):
    result = _check(tmp_path, **env)
    assert result.returncode == 1, result.stdout
    assert f"warning: {variable}: " in result.stdout and expected in result.stdout
    assert "hf_one_0123456789" not in result.stdout and "hf_two_0123456789" not in result.stdout


def test_every_problem_is_listed_at_once(tmp_path):
    bad = {variable: value for variable, value, _ in MALFORMED}
    result = _check(tmp_path, **bad)
    assert result.returncode == 2
    named = {line.split(":")[0] for line in result.stdout.splitlines()}
    assert named >= set(bad)


def test_credentials_in_a_url_are_refused_without_being_echoed(tmp_path):
    result = _check(tmp_path, REPO_URL=f"https://me:{SECRET}@github.com/me/repo.git")
    assert result.returncode == 2 and "REPO_URL: the URL carries credentials" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_secret_values_are_never_echoed(tmp_path):
    # A secret that cannot be used is reported by name only.
    result = _check(tmp_path, JUPYTER_PASSWORD=SECRET, SSH_PORT="0")
    result_json = subprocess.run([PODVISOR, "config", "--json"], capture_output=True, text=True,
                                 env=base_env(tmp_path / "state", JUPYTER_TOKEN=SECRET, JUPYTER_PASSWORD=SECRET))
    assert SECRET not in result.stdout + result.stderr + result_json.stdout + result_json.stderr
    config = json.loads(result_json.stdout)
    assert config["jupyter"]["JUPYTER_TOKEN"] == "***"
    assert config["jupyter"]["JUPYTER_PASSWORD"] == "***"
    assert config["podvisor"]["PODVISOR_STATE_DIR"] == str(tmp_path / "state")


def test_aliases_users_already_set_are_accepted(tmp_path):
    result = subprocess.run([PODVISOR, "config", "--json"], capture_output=True, text=True,
                            env=base_env(tmp_path / "state", JUPYTER_PASSWORD="letmein"))
    assert json.loads(result.stdout)["jupyter"]["JUPYTER_PASSWORD"] == "***"


def _effective(**env: str) -> dict:
    """`podvisor config --json` in this process, with exactly `env` (and PATH) as its environment."""
    saved = dict(os.environ)
    out = io.StringIO()
    os.environ.clear()
    os.environ.update({"PATH": saved.get("PATH", "/usr/bin:/bin"), "PODVISOR_PROVIDER": "local", **env})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            main(["config", "--json"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return json.loads(out.getvalue())


@pytest.mark.parametrize("name", ["PODVISOR_WORKSPACE", "WORKSPACE", "DATA_DIRECTORY"])
def test_moving_the_workspace_moves_every_path_under_it(name):
    config = _effective(**{name: "/data/vol"})
    paths = {
        config["podvisor"]["PODVISOR_STATE_DIR"], config["bootstrap"]["REPO_DIR"], config["bootstrap"]["USER_VENV"],
        config["bootstrap"]["DATASETS_DIR"], config["uploader"]["UPLOAD_WATCH_DIRS"][0],
        config["inference"]["INFERENCE_MODEL_DIR"], config["jupyter"]["JUPYTER_ROOT_DIR"],
    }
    assert all(p.startswith("/data/vol") for p in paths), paths
    assert config["jupyter"]["JUPYTER_ROOT_DIR"] == "/data/vol"
    # A path set on its own stays where it was put.
    assert _effective(**{name: "/data/vol"}, REPO_DIR="/code")["bootstrap"]["REPO_DIR"] == "/code"


def test_an_empty_name_of_a_variable_does_not_hide_its_other_name(tmp_path):
    token = "hf_the_real_token_0123456789"
    config = _effective(HF_TOKEN="", HUGGING_FACE_HUB_TOKEN=token, PODVISOR_STATE_DIR=str(tmp_path / "s"))
    assert config["uploader"]["HF_TOKEN"] == "***", "the token set under its other name was hidden"
    result = _check(tmp_path, HF_TOKEN="", HUGGING_FACE_HUB_TOKEN=token)
    assert result.returncode == 1
    assert "HF_TOKEN: is set but empty, which would hide HUGGING_FACE_HUB_TOKEN" in result.stdout
    assert token not in result.stdout


def test_status_from_any_user_probes_the_ports_the_stack_listens_on(tmp_path, monkeypatch):
    """SSH_PORT defaults to 22 for root and 2222 for a normal user: the login user's `podvisor status` must use
    the stack's port (from its record), not its own default, or it calls sshd down and prints a wrong address."""
    from entrypoint.context import current, running
    from services.sshd.settings import SshSettings

    saved = dict(os.environ)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    try:
        os.environ.clear()
        os.environ.update(base_env(tmp_path / "state"))
        stack = current()
        stack.paths.root.mkdir(parents=True)
        stack.record_environment()
        assert stack.settings(SshSettings).ssh_port == 22
        monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the login user, asking from an SSH session
        assert current().settings(SshSettings).ssh_port == 2222, "the normal user's own default"
        assert running().settings(SshSettings).ssh_port == 22
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_normal_user_whose_workspace_is_not_theirs_keeps_state_in_their_own_folder(tmp_path, monkeypatch):
    from entrypoint.workspace import default_state_dir

    from pathlib import Path

    mine, home = tmp_path / "mine", tmp_path / "home"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) in (mine, home))  # what this user may write
    monkeypatch.setenv("PODVISOR_WORKSPACE", str(tmp_path / "not-writable"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "podvisor"
    mine.mkdir()
    monkeypatch.setenv("PODVISOR_WORKSPACE", str(mine))
    assert default_state_dir() == mine / ".podvisor"
    home.mkdir()  # a workspace not made yet, in a folder of the user's: theirs to make (a bare host's first start)
    monkeypatch.setenv("PODVISOR_WORKSPACE", str(home / "work"))
    assert default_state_dir() == home / "work" / ".podvisor"


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("JUPYTER_TOKEN", "t" * 100_000, "100000 characters long; expected at most 1024"),
    ("JUPYTER_PASSWORD", "sha1:nothex", "starts like a password hash (sha1:) but is not a whole one"),
    ("JUPYTER_PASSWORD", "argon2:$argon2id$v=19$m=10240", "starts like a password hash (argon2:)"),
])
def test_a_jupyter_credential_no_login_could_use_is_an_error_that_never_echoes_it(tmp_path, variable, value,
                                                                                  expected):
    result = _check(tmp_path, **{variable: value})
    assert result.returncode == 2, result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{variable}: "))
    assert expected in line and "expected" in line, line
    assert value[-12:] not in result.stdout + result.stderr, "the credential is never echoed"


def test_the_documented_spelling_wins_over_another_case(tmp_path, monkeypatch):
    """`ssh_port` and `SSH_PORT` both set: the documented one is used, whatever order the environment has."""
    from entrypoint.catalog import load
    from services.sshd.settings import SshSettings

    for order in (("ssh_port", "SSH_PORT"), ("SSH_PORT", "ssh_port")):
        env = {**base_env(tmp_path / "state"), **{name: "2200" if name == "ssh_port" else "2222" for name in order}}
        monkeypatch.setattr(os, "environ", env)
        section = next(s for s in load().sections.values() if isinstance(s, SshSettings))
        assert section.ssh_port == 2222, order


def test_a_missing_extra_services_folder_is_reported(tmp_path, monkeypatch):
    from entrypoint.registry import broken_extras

    monkeypatch.setenv("PODVISOR_EXTRA_SERVICES", str(tmp_path / "nowhere"))
    assert "no such folder" in broken_extras()[str(tmp_path / "nowhere")]


@pytest.mark.parametrize(("env", "expected"), [
    ({"AUTOSTOP_ACTION": "runpod"}, "runpod needs RUNPOD_POD_ID and RUNPOD_API_KEY"),
    ({"AUTOSTOP_ACTION": "runpod", "RUNPOD_POD_ID": "abc123"}, "runpod needs RUNPOD_POD_ID and RUNPOD_API_KEY"),
    ({"AUTOSTOP_ACTION": "vast,command"}, "vast needs CONTAINER_ID and CONTAINER_API_KEY (or VAST_API_KEY); "
                                          "command needs AUTOSTOP_COMMAND"),
])
def test_an_autostop_whose_every_action_lacks_what_it_needs_is_an_error(tmp_path, monkeypatch, env, expected):
    """The stop could never work: said at boot (the service is left down with the reason), not at the stop."""
    import services.autostop
    from entrypoint.context import current

    monkeypatch.setattr(os, "environ", {**base_env(tmp_path / "state"), **env})
    with pytest.raises(RuntimeError, match="no stop action can work") as refused:
        services.autostop.prepare(current())
    assert expected in str(refused.value)
    monkeypatch.setattr(os, "environ", {**base_env(tmp_path / "state"), **env, "AUTOSTOP_ACTION":
                                        env["AUTOSTOP_ACTION"] + ",exit"})
    services.autostop.prepare(current())  # the exit after it can work: a warning, not an error
