"""`podvisor cloud` against loopback stand-ins of RunPod's and Vast.ai's APIs (tests/fakecloud.py): the method,
path, body and auth header of every request each command sends, the key in no URL and no output, and what a user
reads when a key is refused, missing or only in the OS keyring. The launch wait and SSH against a real stack are
in the platform modules (test_platform_runpod, test_platform_vast)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import keyring
import pytest
from keyring.backend import KeyringBackend

from entrypoint.cli import main
from fakecloud import KEY, FakeRunPod, FakeVast

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


@pytest.fixture
def laptop(monkeypatch, tmp_path):
    """A shell with no provider variables of the developer's, and its own config dir."""
    for name in ("RUNPOD_API_KEY", "VAST_API_KEY", "PODVISOR_CLOUD", "RUNPOD_API_URL", "VAST_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


def _serve(laptop, api):
    """The stand-in's URLs and key in the laptop's environment, for one test."""
    for name, value in api.env.items():
        laptop.setenv(name, value)
    yield api
    api.close()


@pytest.fixture
def runpod(laptop):
    yield from _serve(laptop, FakeRunPod())


@pytest.fixture
def vast(laptop):
    yield from _serve(laptop, FakeVast())


def cloud(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["cloud", *argv])
    out, err = capsys.readouterr()
    assert KEY not in out + err, "the API key was printed"
    return code, out, err


def assert_key_only_in_the_header(api) -> None:
    assert api.requests, "nothing was sent"
    for request in api.requests:
        assert KEY not in request["path"], request["path"]
        assert request["headers"]["Authorization"] == f"Bearer {KEY}"
        assert KEY not in json.dumps(request["body"])


def test_runpod_gpus_ranked_by_price_from_the_v2_catalog(runpod, capsys):
    code, out, _ = cloud(capsys, "gpus", "--provider", "runpod", "--min-vram", "24", "--max-price", "1", "--json")
    assert code == 0
    rows = [(g["name"], g["cloud"], g["price_per_hour"]) for g in json.loads(out)]
    # Each cloud a row of its own, at its own price: the cloud shown is the one `launch --cloud` asks for.
    assert rows == [("RTX 3090", "community", 0.22), ("RTX 4090", "community", 0.34), ("RTX 4090", "secure", 0.69)]
    sent = runpod.requests[0]
    assert (sent["method"], urlsplit(sent["path"]).path) == ("GET", "/v2/catalog/gpus")
    assert parse_qs(urlsplit(sent["path"]).query) == {"include": ["AVAILABILITY"], "product": ["POD"], "count": ["1"]}
    assert_key_only_in_the_header(runpod)
    assert runpod.refused == []


def test_runpod_gpus_secure_cloud_asks_for_secure_prices(runpod, capsys):
    code, out, _ = cloud(capsys, "gpus", "--provider", "runpod", "--cloud", "secure", "--count", "2")
    assert code == 0 and "RTX 3090" not in out and "A100 PCIe" in out
    query = parse_qs(urlsplit(runpod.requests[0]["path"]).query)
    assert query["cloud"] == ["SECURE"] and query["count"] == ["2"]
    assert runpod.refused == []


def test_a_key_refused_by_the_catalog_is_one_line_and_launch_goes_on_with_the_type_id(runpod, capsys):
    runpod.catalog_status = 403
    code, out, err = cloud(capsys, "gpus", "--provider", "runpod")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "HTTP 403" in err and "--gpu-type-id" in err
    code, _, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "4090", "--image", "img:1")
    assert code == 2 and "--gpu-type-id" in err
    code, _, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu-type-id", "NVIDIA GeForce RTX 4090",
                         "--image", "ghcr.io/podvisor/podvisor:0.1.0")
    assert code == 0, err
    assert "not checked against RunPod's listing" in err
    assert runpod.requests[-1]["body"]["gpu"] == {"id": "NVIDIA GeForce RTX 4090", "count": 1}


def test_runpod_launch_sends_our_ports_and_only_the_env_asked_for(runpod, capsys):
    code, out, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image",
                           "ghcr.io/podvisor/podvisor:0.1.0", "--env", "HF_TOKEN=hf_abc", "--env", "X=a=b",
                           "--volume-gb", "50", "--cloud", "community", "--json")
    assert code == 0, err
    sent = runpod.requests[-1]
    assert (sent["method"], sent["path"]) == ("POST", "/v2/pods")
    assert sent["body"] == {"name": "podvisor", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
                            "startSsh": True, "image": "ghcr.io/podvisor/podvisor:0.1.0",
                            "ports": ["22/tcp", "8888/http", "8000/http"], "cloud": "COMMUNITY",
                            "env": {"HF_TOKEN": "hf_abc", "X": "a=b"},
                            "mounts": {"persistent": {"size": 50, "path": "/workspace"}}}
    assert json.loads(out)["id"] == "pod1x7k2"
    assert_key_only_in_the_header(runpod)
    assert runpod.refused == []


def test_the_runpod_stand_in_refuses_what_v2_refuses_and_the_error_is_one_line(runpod, capsys):
    """The contract check is live: a v1-shaped body (and an unknown field) is refused by name, as v2 does, and the
    CLI shows the problem object's title and detail in one line."""
    import requests

    sent = requests.post(f"{runpod.url}/v2/pods", headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
                         json={"name": "x", "imageName": "img:1", "gpuTypeIds": ["NVIDIA GeForce RTX 4090"]})
    assert sent.status_code == 400 and sent.json()["title"] == "Bad Request"
    assert any("'imageName'" in e and "'gpuTypeIds'" in e for e in sent.json()["errors"]), sent.json()
    code, _, err = cloud(capsys, "stop", "--provider", "runpod", "nosuchpod")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "HTTP 404 on GET /v2/pods/nosuchpod" in err or "HTTP 404 on POST /v2/pods/nosuchpod/action" in err
    assert "Not Found: The requested Pod does not exist." in err


def test_without_cloud_the_pod_goes_where_the_price_shown_is(runpod, capsys):
    """The catalog's cheapest 4090 row is the community cloud's: the pod is created there, not in v2's default
    (SECURE) at another price."""
    code, _, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image", "img:1")
    assert code == 0, err
    assert runpod.requests[-1]["body"]["cloud"] == "COMMUNITY"
    assert "RTX 4090 in the community cloud, the cheapest at $0.34/h" in err


def test_a_runpod_create_whose_answer_is_lost_is_found_by_name_not_sent_twice(runpod, capsys):
    runpod.create_fails_with = 504  # the gateway timed out after RunPod had created the pod
    code, out, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image", "img:1",
                           "--name", "exp-7", "--json")
    assert code == 0, err
    assert len([r for r in runpod.requests if (r["method"], r["path"]) == ("POST", "/v2/pods")]) == 1
    assert json.loads(out)["id"] == "pod1x7k2" and len(runpod.pods) == 1


def test_a_community_pod_without_a_public_ip_is_refused_at_once_not_waited_on(runpod, capsys):
    """v2 has no field to ask for a public IP: a community host without one publishes 22/tcp with no public
    address, and only RunPod's proxy (an interactive shell) reaches it. The wait says so once the pod runs."""
    runpod.public_ip = False
    code, _, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 3090", "--image", "img:1",
                         "--cloud", "community", "--wait", "--timeout", "600", "--interval", "0.1")
    assert code == 1, err
    assert "RunPod gave pod pod1x7k2 no public address for 22/tcp (a community host" in err
    assert "ssh pod1x7k2-64411eb2@ssh.runpod.io" in err and "--cloud secure" in err
    assert len([r for r in runpod.requests if r["path"] == "/v2/pods/pod1x7k2"]) <= 4, "said at once"


def test_cloud_logs_fall_back_to_v2_log_streaming_when_ssh_does_not_answer(runpod, capsys):
    runpod.polls_before_up = 10**6  # no SSH address, ever
    assert cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image", "img:1")[0] == 0
    code, out, err = cloud(capsys, "logs", "--provider", "runpod", "pod1x7k2", "-n", "2")
    assert code == 0, err
    assert out.splitlines() == ["container line 4", "container line 5"]
    sent = runpod.requests[-1]
    assert urlsplit(sent["path"]).path == "/v2/pods/pod1x7k2/logs" and sent["headers"]["Accept"] == "text/event-stream"
    assert parse_qs(urlsplit(sent["path"]).query) == {"source": ["container"], "tail": ["2"]}
    assert runpod.refused == []


def test_template_push_creates_then_updates_runpods_template_from_the_repo(runpod, capsys):
    ours = json.loads((DEPLOY / "runpod" / "template.json").read_text())
    assert cloud(capsys, "template", "push", "--provider", "runpod")[0] == 0
    created = runpod.requests[-1]
    assert (created["method"], created["path"], created["body"]) == ("POST", "/v2/templates", ours)
    code, out, _ = cloud(capsys, "template", "push", "--provider", "runpod")
    assert code == 0 and "updated" in out
    updated = runpod.requests[-1]
    assert (updated["method"], updated["path"]) == ("PATCH", "/v2/templates/tpl1")
    assert updated["body"]["image"] == ours["image"] and updated["body"]["startSsh"] is True
    code, out, _ = cloud(capsys, "templates", "--provider", "runpod", "--name", "podv", "--json")
    assert code == 0 and json.loads(out) == [{"id": "tpl1", "name": "podvisor", "image": ours["image"]}]
    assert (runpod.requests[-1]["method"], runpod.requests[-1]["path"]) == ("GET", "/v2/templates")
    # Launch from it by name: the template's id is sent, not its image or ports.
    assert cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 3090", "--template", "podvisor")[0] == 0
    body = runpod.requests[-1]["body"]
    assert body["templateId"] == "tpl1" and "image" not in body and "env" not in body
    assert runpod.refused == []


def _sent(api, method: str, path: str) -> list[dict]:
    return [r for r in api.requests if r["method"] == method and urlsplit(r["path"]).path == path]


def test_vast_template_push_and_launch_rent_the_cheapest_offer_with_room_for_the_disk(vast, capsys):
    """Our own template only (a stranger's public one of the same name is neither updated nor matched), and the
    offer search as the official client sends it: the disk in the price (allocated_storage) and in the filter."""
    ours = json.loads((DEPLOY / "vast" / "template.json").read_text())
    code, out, err = cloud(capsys, "template", "push", "--provider", "vast")
    assert code == 0, err
    lookup, created = vast.requests[-2:]
    assert lookup["method"] == "GET" and lookup["path"].startswith("/api/v0/template/?")
    assert json.loads(parse_qs(urlsplit(lookup["path"]).query)["select_filters"][0]) == {
        "creator_id": {"eq": FakeVast.ME}, "name": {"eq": "podvisor"}}
    assert (created["method"], created["path"]) == ("POST", "/api/v0/template/")
    assert created["body"]["env"] == ours["env"] and created["body"]["runtype"] == "args"
    assert vast.templates["hstranger"]["image"] == "someone/else", "a stranger's template is left alone"
    code, _, err = cloud(capsys, "launch", "--provider", "vast", "--gpu", "RTX 4090", "--template", "podvisor",
                         "--env", "HF_TOKEN=hf_abc", "--volume-gb", "80")
    assert code == 0, err
    search, = _sent(vast, "POST", "/api/v0/bundles/")
    assert search["body"]["gpu_name"] == {"eq": "RTX 4090"} and search["body"]["direct_port_count"] == {"gte": 1}
    assert search["body"]["allocated_storage"] == 80 and search["body"]["disk_space"] == {"gte": 80}
    assert search["body"]["type"] == "ondemand" and len(search["body"]["order"]) == 2, "Vast's published forms"
    rent, = [r for r in vast.requests if r["method"] == "PUT"]
    # 9005 is cheaper but has 40 GB of disk; 9002 is the cheapest with room for 80 GB, its disk priced in.
    assert rent["path"] == "/api/v0/asks/9002/"
    assert rent["body"] == {"client_id": "me", "label": "podvisor", "runtype": "args",
                            "template_hash_id": "h" + "1".rjust(31, "0"), "image": "ghcr.io/podvisor/podvisor:0.1.0",
                            "env": "-e HF_TOKEN=hf_abc", "disk": 80}
    assert_key_only_in_the_header(vast)
    assert vast.refused == []


def test_the_vast_stand_in_checks_each_body_against_vasts_published_schema(vast):
    """The contract check is live: a rent with neither image nor template, or a launch mode Vast does not know,
    is refused as the published schema refuses it."""
    import requests

    for body in ({"label": "x", "runtype": "args"}, {"image": "img:1", "runtype": "bash"}):
        sent = requests.put(f"{vast.url}/api/v0/asks/9002/", headers={"Authorization": f"Bearer {KEY}"}, json=body,
                            timeout=10)
        assert sent.status_code == 400 and sent.json()["error"] == "invalid_args", sent.text
    assert len(vast.refused) == 2 and vast.instances == {}


def test_vast_vram_is_counted_in_vasts_units_and_the_disk_is_in_the_price(vast, capsys):
    """gpu_ram is MB of 1000 (vast-cli's offers_mult): x1024 dropped every H100 at --min-vram 80 and every 4090 at
    --min-vram 24. Prices include the default disk, as Vast bills it."""
    code, out, _ = cloud(capsys, "gpus", "--provider", "vast", "--min-vram", "80", "--json")
    assert code == 0 and {g["name"] for g in json.loads(out)} == {"A100 SXM4", "H100 SXM"}
    assert _sent(vast, "POST", "/api/v0/bundles/")[-1]["body"]["gpu_ram"] == {"gte": 80000}
    code, out, _ = cloud(capsys, "gpus", "--provider", "vast", "--min-vram", "24", "--json")
    rows = json.loads(out)
    assert code == 0 and [g["id"] for g in rows if g["name"] == "RTX 4090"] == ["9002", "9001"]
    assert rows[0]["price_per_hour"] == round(0.32 + 0.20 * 100 / 720, 3), "the 100 GB disk is in the price"
    assert rows[0]["vram_gb"] == 24.6


def test_vast_gpu_names_written_the_cli_way_find_the_offers(vast, capsys):
    code, _, err = cloud(capsys, "launch", "--provider", "vast", "--gpu", "RTX_4090", "--image", "img:1")
    assert code == 0, err
    assert _sent(vast, "POST", "/api/v0/bundles/")[0]["body"]["gpu_name"] == {"eq": "RTX 4090"}


def test_a_vast_rent_whose_answer_is_lost_is_found_by_its_label_not_rented_twice(vast, capsys):
    vast.rent_fails_with = 502  # the gateway timed out after Vast had rented
    code, out, err = cloud(capsys, "launch", "--provider", "vast", "--gpu", "RTX 4090", "--image", "img:1",
                           "--name", "exp-7", "--json")
    assert code == 0, err
    assert len(_sent(vast, "PUT", "/api/v0/asks/9002/")) == 1, "a rent is never repeated"
    assert json.loads(out)["id"] == "4242" and len(vast.instances) == 1


def test_an_unknown_vast_instance_is_one_line_not_a_traceback(vast, capsys):
    code, out, err = cloud(capsys, "status", "--provider", "vast", "999")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "Vast.ai has no instance 999" in err
    assert "Traceback" not in err


def test_a_vast_instance_whose_host_lost_contact_is_not_waited_on(vast, capsys):
    vast.comes_up_as = "unknown"
    code, _, err = cloud(capsys, "launch", "--provider", "vast", "--gpu", "RTX 4090", "--image", "img:1", "--wait",
                         "--timeout", "600", "--interval", "0.1")
    assert code == 1 and "is UNKNOWN: it will not come up" in err
    assert len(_sent(vast, "GET", "/api/v0/instances/4242/")) <= 4, "given up on at once, not after the timeout"


def test_vast_launch_from_an_image_publishes_our_ports(vast, capsys):
    code, _, err = cloud(capsys, "launch", "--provider", "vast", "--gpu", "9003", "--image", "ghcr.io/podvisor/podvisor:0.1.0")
    assert code == 0, err
    rent = [r for r in vast.requests if r["method"] == "PUT"][0]
    assert rent["path"] == "/api/v0/asks/9003/"
    assert rent["body"]["env"] == "-p 22:22 -p 8888:8888 -p 8000:8000", "docker flags in one string, as published"


def test_list_stop_and_terminate_send_the_documented_calls(runpod, vast, capsys):
    cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image", "img:1")
    code, out, _ = cloud(capsys, "list", "--provider", "runpod", "--json")
    assert code == 0 and [p["id"] for p in json.loads(out)] == ["pod1x7k2"]
    assert cloud(capsys, "stop", "--provider", "runpod", "pod1x7k2")[0] == 0
    assert (runpod.requests[-1]["method"], runpod.requests[-1]["path"], runpod.requests[-1]["body"]) == (
        "POST", "/v2/pods/pod1x7k2/action", {"action": "stop"})
    # Stopped, the pod cannot say whether uploads are pending: terminate refuses without --force.
    code, _, err = cloud(capsys, "terminate", "--provider", "runpod", "pod1x7k2", "--yes")
    assert code == 1 and "cannot be asked whether uploads are pending" in err
    assert all(r["method"] != "DELETE" for r in runpod.requests)
    code, _, err = cloud(capsys, "terminate", "--provider", "runpod", "pod1x7k2", "--force")
    assert code == 2 and "--yes" in err  # no terminal to ask on
    assert cloud(capsys, "terminate", "--provider", "runpod", "pod1x7k2", "--force", "--yes")[0] == 0
    assert (runpod.requests[-1]["method"], runpod.requests[-1]["path"]) == ("DELETE", "/v2/pods/pod1x7k2")
    assert runpod.refused == []

    cloud(capsys, "launch", "--provider", "vast", "--gpu", "RTX 4090", "--image", "img:1")
    assert cloud(capsys, "stop", "--provider", "vast", "4242")[0] == 0
    assert (vast.requests[-1]["method"], vast.requests[-1]["path"], vast.requests[-1]["body"]) == (
        "PUT", "/api/v0/instances/4242/", {"state": "stopped"})
    assert cloud(capsys, "terminate", "--provider", "vast", "4242", "--force", "--yes")[0] == 0
    assert (vast.requests[-1]["method"], vast.requests[-1]["path"]) == ("DELETE", "/api/v0/instances/4242/")
    assert vast.refused == []


def test_a_refused_key_is_one_line_that_says_where_it_came_from(runpod, laptop, capsys):
    laptop.setenv("RUNPOD_API_KEY", "rpa_wrong_key_0000")
    code, out, err = cloud(capsys, "list", "--provider", "runpod")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "refused the API key from RUNPOD_API_KEY (HTTP 401 on GET /v2/pods)" in err
    assert "rpa_wrong_key_0000" not in err


class MemoryKeyring(KeyringBackend):
    """The OS keyring's place (there is no Secret Service on a test machine): what `keyring set` would store."""
    priority = 1
    stored: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.stored.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.stored[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.stored.pop((service, username), None)


def test_the_key_comes_from_the_flag_then_the_environment_then_the_keyring(runpod, laptop, capsys):
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        laptop.delenv("RUNPOD_API_KEY")
        code, _, err = cloud(capsys, "list", "--provider", "runpod")
        assert code == 1 and "--api-key" in err and "RUNPOD_API_KEY" in err and "keyring set runpod api_key" in err
        keyring.set_password("runpod", "api_key", KEY)
        code, out, _ = cloud(capsys, "doctor", "--provider", "runpod")
        assert "runpod API key found in the OS keyring (service 'runpod')" in out
        assert "GET /v2/pods accepted it" in out
        laptop.setenv("RUNPOD_API_KEY", "rpa_from_env_wrong")
        assert "refused the API key from RUNPOD_API_KEY" in cloud(capsys, "list", "--provider", "runpod")[2]
        code, _, _ = cloud(capsys, "list", "--provider", "runpod", "--api-key", KEY)
        assert code == 0
        assert "refused the API key from --api-key" in cloud(capsys, "list", "--provider", "runpod", "--api-key", "x")[2]
    finally:
        keyring.set_keyring(previous)


def test_doctor_checks_key_api_ssh_known_hosts_and_the_template_image(vast, laptop, tmp_path, capsys):
    identity = tmp_path / "id_test"
    identity.write_text("not read")
    code, out, _ = cloud(capsys, "doctor", "--provider", "vast", "-i", str(identity))
    lines = out.splitlines()
    assert lines[0] == "ok   vast API key found in VAST_API_KEY"
    assert lines[1] == "ok   vast API: GET /users/current/ accepted it"
    assert lines[2].startswith("ok   SSH client: OpenSSH")
    assert f"known_hosts: {tmp_path / 'config' / 'podvisor' / 'known_hosts'}" in out
    assert "FAIL template 'podvisor': the repo's image ghcr.io/podvisor/podvisor:0.1.0, the provider's none yet" in out
    assert code == 1
    cloud(capsys, "template", "push", "--provider", "vast")
    code, out, _ = cloud(capsys, "doctor", "--provider", "vast", "-i", str(identity))
    assert code == 0, out


def test_launch_wait_against_a_pod_that_never_answers_times_out_with_what_it_saw(laptop, capsys, open_tmp):
    """It runs the SSH client against a closed port for seconds: a real-program test, not a fast one."""
    from conftest import free_port

    laptop.setenv("XDG_CONFIG_HOME", str(open_tmp))
    api = FakeRunPod(ssh_port=free_port())  # nothing listens there
    for name, value in api.env.items():
        laptop.setenv(name, value)
    try:
        code, _, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image", "img:1",
                             "--wait", "--timeout", "4", "--interval", "1")
    finally:
        api.close()
    assert code == 1
    assert "no SSH address yet" in err  # the progress line before the address came
    last = err.strip().splitlines()[-1]
    assert "not ready after 4 s; last seen: SSH [127.0.0.1]" in last and "Connection refused" in last
    assert "podvisor cloud logs pod1x7k2" in last and "podvisor cloud stop pod1x7k2" in last


@pytest.mark.skipif(os.geteuid() != 0, reason="a pod runs as root: login user, sshd privilege separation")
def test_terminate_refuses_while_the_pod_reports_uploads_pending(open_tmp):
    """A real stack whose only destination cannot take the checkpoint: the pod's own status says a stop would
    wait for it, so `cloud terminate` (which deletes the volume) refuses until --force."""
    from platforms import local_paths, pod_dir

    from conftest import wait_for
    from fakecloud import run_cloud

    with pod_dir() as pod:
        env = {**local_paths(pod), "RUNPOD_POD_ID": "k3xq9z1abcdef0", "PUBLIC_KEY": pod.public_key,
               "JUPYTER_ENABLED": "false", "INFERENCE_ENABLED": "false", "AUTOSTOP_ENABLED": "false",
               "UPLOAD_DESTINATIONS": "file:///proc/podvisor-cannot-write-here", "UPLOAD_SETTLE_SECONDS": "0.2",
               "RESTORE_REQUIRED": "false"}
        stack = pod.boot(env)
        pod.wait_ready_banner()
        checkpoint = pod.root / "workspace" / "checkpoints" / "checkpoint-100"
        checkpoint.mkdir(parents=True)
        (checkpoint / "model.safetensors").write_bytes(os.urandom(4096))
        wait_for(lambda: stack.status().get("stop_blockers"), 60, 0.3, lambda: stack.output[-3000:])
        api = FakeRunPod(ssh_port=pod.ports["ssh"], polls_before_up=0)
        try:
            assert run_cloud(api, open_tmp, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--image",
                             "img:1").returncode == 0
            refused = run_cloud(api, open_tmp, "terminate", "--provider", "runpod", "pod1x7k2", "--yes",
                                "-i", str(pod.key))
            assert refused.returncode == 1, refused.stderr
            assert "not terminating pod1x7k2: waiting for" in refused.stderr and "--force" in refused.stderr
            assert all(r["method"] != "DELETE" for r in api.requests)
            forced = run_cloud(api, open_tmp, "terminate", "--provider", "runpod", "pod1x7k2", "--yes", "--force")
            assert forced.returncode == 0 and api.requests[-1]["method"] == "DELETE"
        finally:
            api.close()


def test_a_malformed_variable_is_named_not_a_traceback(laptop, capsys):
    laptop.setenv("PODVISOR_CLOUD", "aws")
    code, out, err = cloud(capsys, "list")
    assert code == 2 and out == ""
    assert err.strip() == "podvisor cloud: PODVISOR_CLOUD: Input should be 'runpod' or 'vast'"
    laptop.delenv("PODVISOR_CLOUD")
    code, _, err = cloud(capsys, "list")
    assert code == 2 and "pass --provider runpod|vast or set PODVISOR_CLOUD" in err


def test_a_runpod_cluster_is_launched_in_one_request_listed_by_node_and_terminated_whole(runpod, capsys):
    """`launch --nodes 2`: one CreateClusterRequest (v2's published schema), TRAINING, our ports and the env asked
    for on every node; `list` says which pod is which node; `terminate CLUSTER` deletes the cluster, not pod by
    pod."""
    code, out, err = cloud(capsys, "launch", "--provider", "runpod", "--gpu", "RTX 4090", "--count", "2", "--nodes",
                           "2", "--image", "ghcr.io/podvisor/podvisor:0.1.0", "--env", "JOB_COMMAND=python train.py",
                           "--volume-gb", "100", "--name", "train", "--json")
    assert code == 0, err
    created = _sent(runpod, "POST", "/v2/clusters")
    assert [r["body"] for r in created] == [{
        "name": "train", "type": "TRAINING", "startSsh": True,
        "compute": {"gpuTypeId": "NVIDIA GeForce RTX 4090", "gpuCountPerPod": 2, "podCount": 2},
        "image": "ghcr.io/podvisor/podvisor:0.1.0", "ports": ["22/tcp", "8888/http", "8000/http"],
        "env": {"JOB_COMMAND": "python train.py"}, "mounts": {"persistent": {"size": 100, "path": "/workspace"}}}]
    launched = json.loads(out)
    assert (launched["id"], launched["nodes"], [p["cluster"] for p in launched["pods"]]) == (
        "clu1", 2, ["clu1 rank 0", "clu1 rank 1"])
    code, out, _ = cloud(capsys, "list", "--provider", "runpod")
    assert code == 0 and "clu1 rank 1" in out
    code, out, _ = cloud(capsys, "status", "--provider", "runpod", "clu1")
    assert code == 0 and out.startswith("cluster clu1 train: 2 of 2 node(s)")
    assert cloud(capsys, "terminate", "--provider", "runpod", "clu1", "--force", "--yes")[0] == 0
    assert (runpod.requests[-1]["method"], runpod.requests[-1]["path"]) == ("DELETE", "/v2/clusters/clu1")
    assert runpod.pods == {} and runpod.clusters == {}
    assert_key_only_in_the_header(runpod)
    assert runpod.refused == []


def test_nodes_on_vast_is_a_usage_error_naming_what_to_set(vast, capsys):
    code, _, err = cloud(capsys, "launch", "--provider", "vast", "--gpu", "RTX 4090", "--nodes", "2", "--image", "i:1")
    assert code == 2 and "JOB_NNODES, JOB_NODE_RANK and JOB_MASTER_ADDR" in err
