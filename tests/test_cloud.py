"""Provider detection and the public addresses each provider maps ports to."""
from __future__ import annotations

from entrypoint.cloud import detect


def test_runpod():
    cloud = detect({"RUNPOD_POD_ID": "abc123", "RUNPOD_PUBLIC_IP": "203.0.113.7", "RUNPOD_TCP_PORT_22": "40022"})
    assert cloud.provider == "runpod" and cloud.instance_id == "abc123"
    assert cloud.endpoint(22, "ssh") == "ssh root@203.0.113.7 -p 40022"
    assert cloud.endpoint(8888, "http", path="/lab") == "https://abc123-8888.proxy.runpod.net/lab"
    assert cloud.endpoint(8000, "http").endswith("proxy.runpod.net/")
    assert detect({"RUNPOD_POD_ID": "abc123", "RUNPOD_PUBLIC_IP": "203.0.113.7"}).endpoint(22, "ssh", "runner") \
        == "port 22 is not published to the internet: add it to the template's ports"


def test_vast():
    cloud = detect({"CONTAINER_ID": "987", "PUBLIC_IPADDR": "198.51.100.4", "VAST_TCP_PORT_22": "41000",
                    "VAST_TCP_PORT_8888": "41001"})
    assert cloud.provider == "vast" and cloud.instance_id == "987"
    assert cloud.endpoint(22, "ssh") == "ssh root@198.51.100.4 -p 41000"
    assert cloud.endpoint(8888, "http", path="/lab") == "http://198.51.100.4:41001/lab"
    assert detect({"VAST_CONTAINERLABEL": "C.555"}).instance_id == "555"


def test_kubernetes():
    cloud = detect({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_IP": "10.1.2.3", "HOSTNAME": "trainer-0"})
    assert cloud.provider == "kubernetes"
    assert cloud.endpoint(8000, "http").startswith("http://10.1.2.3:8000")


def test_forced_provider_and_local():
    assert detect({"RUNPOD_POD_ID": "x"}, forced="local").provider == "local"
    assert detect({}, forced="local").endpoint(8888, "http") == "http://127.0.0.1:8888/"
    assert detect({}, forced="local").endpoint(2222, "ssh", "me") == "ssh me@127.0.0.1 -p 2222"
