"""The inference API: real uvicorn under supervisord, real TorchScript models built here, real HTTP."""
from __future__ import annotations

import asyncio
import os
import pwd
import threading
import time

import httpx
import pytest
import requests

from conftest import base_env, free_port, wait_for

torch = pytest.importorskip("torch")
TOKEN = "inference-token-0123456789"


class Net(torch.nn.Module):
    def __init__(self, seed: int, heavy: int = 0, refuse_inf: bool = False) -> None:
        super().__init__()
        self.refuse_inf = refuse_inf
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(4, 3)
        self.heavy = heavy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.refuse_inf and bool(torch.isinf(x).any()):  # the model's own failure on well-formed input
            raise RuntimeError("the model cannot take infinite values")
        y = self.linear(x)
        for _ in range(self.heavy):  # a slower model, so concurrent requests queue up behind a batch
            y = y + torch.sin(torch.randn(64, 256) @ torch.randn(256, 256)).mean() * 0
        return y


def assert_close(got, expected):
    torch.testing.assert_close(torch.tensor(got), torch.as_tensor(expected), atol=1e-5, rtol=1e-5)


def save_model(path, seed, heavy=0, refuse_inf=False):
    """Save atomically (temp name, then rename), as a training loop should."""
    model = torch.jit.script(Net(seed, heavy, refuse_inf).eval())
    tmp = path.with_name(path.name + ".tmp")
    model.save(str(tmp))
    os.replace(tmp, path)
    past = time.time() - 5  # not "still being written"
    os.utime(path, (past, past))
    return model


def _env(tmp_path, port, **extra):
    settings = dict(SSH_ENABLED="false", JUPYTER_ENABLED="false", UPLOAD_ENABLED="false", AUTOSTOP_ENABLED="false",
                    INFERENCE_PORT=str(port), INFERENCE_MODEL_DIR=str(tmp_path / "models"),
                    INFERENCE_RELOAD_SECONDS="0.3", INFERENCE_API_TOKEN=TOKEN, PODVISOR_BIND_HOST="127.0.0.1")
    return base_env(tmp_path / "state", **{**settings, **extra})


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _get(port, path, auth=True):
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", headers=AUTH if auth else {}, timeout=10)
    except requests.ConnectionError:
        return None


def _infer(port, rows, **extra):
    return requests.post(f"http://127.0.0.1:{port}/infer", headers=AUTH, json={"inputs": {"x": rows}, **extra},
                         timeout=30)


@pytest.fixture
def served(tmp_path, stack_factory):
    port = free_port()
    (tmp_path / "models").mkdir()
    stack = stack_factory(_env(tmp_path, port))
    wait_for(lambda: _get(port, "/healthz", auth=False), 60, 0.2, lambda: stack.output[-2000:])
    return port, stack


def test_ready_only_with_a_model_and_results_equal_the_direct_call(tmp_path, served):
    port, stack = served
    wait_for(lambda: "no model file" in _get(port, "/readyz").json()["reason"], 30, 0.2)
    assert _get(port, "/readyz").status_code == 503
    model = save_model(tmp_path / "models" / "model_step_1.pt", seed=1)
    wait_for(lambda: _get(port, "/readyz").status_code == 200, 30, 0.2, lambda: stack.output[-2000:])
    info = _get(port, "/model").json()
    assert (info["format"], info["device"], info["version"]) == ("torchscript", "cpu", "model_step_1.pt")
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
    out = _infer(port, rows)
    assert out.status_code == 200
    expected = model(torch.tensor(rows)).tolist()
    assert_close(out.json()["outputs"], expected)
    assert out.json()["model_version"] == "model_step_1.pt" and out.json()["device"] == "cpu"
    assert (tmp_path / "state" / "heartbeats" / "inference").exists(), "autostop's heartbeat"
    assert stack.status()["services"]["inference"]["ready"] is True


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(tmp_path, served):
    port, stack = served
    model = save_model(tmp_path / "models" / "model_step_1.pt", seed=2, heavy=20)
    wait_for(lambda: _get(port, "/readyz").status_code == 200, 30, 0.2)

    async def burst():
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            return await asyncio.gather(*[client.post(f"http://127.0.0.1:{port}/infer",
                                                      json={"inputs": {"x": [[float(i), 0.0, 1.0, -float(i)]]}})
                                          for i in range(32)])

    answers = asyncio.run(burst())
    for i, answer in enumerate(answers):
        assert answer.status_code == 200
        expected = model(torch.tensor([[float(i), 0.0, 1.0, -float(i)]])).tolist()
        assert_close(answer.json()["outputs"], expected)
    metrics = _get(port, "/metrics").text
    single = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith('inference_batch_size_bucket{le="1.0"}')))
    calls = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("inference_batch_size_count")))
    assert calls < 32 and single < calls, "some model calls carried more than one request"


def test_hot_reload_under_traffic_never_fails_a_request_and_a_broken_file_keeps_the_old_model(tmp_path, served):
    port, stack = served
    save_model(tmp_path / "models" / "model_step_1.pt", seed=3)
    wait_for(lambda: _get(port, "/readyz").status_code == 200, 30, 0.2)
    failures, versions, stop = [], set(), threading.Event()

    def traffic():
        while not stop.is_set():
            response = _infer(port, [[1.0, 2.0, 3.0, 4.0]])
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                versions.add(response.json()["model_version"])

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        new = save_model(tmp_path / "models" / "model_step_2.pt", seed=4)
        wait_for(lambda: _get(port, "/model").json()["version"] == "model_step_2.pt", 30, 0.2)
        time.sleep(1)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == [] and versions == {"model_step_1.pt", "model_step_2.pt"}
    assert_close(_infer(port, [[1.0, 2.0, 3.0, 4.0]]).json()["outputs"], new(torch.tensor([[1.0, 2.0, 3.0, 4.0]])))
    broken = tmp_path / "models" / "model_step_3.pt"
    broken.write_bytes(b"this is not a model")
    os.utime(broken, (time.time() - 5, time.time() - 5))
    wait_for(lambda: (_get(port, "/readyz").json().get("last_reload_error") or "").startswith(
        "loading model_step_3.pt failed"), 30, 0.2)
    assert _get(port, "/readyz").status_code == 200
    assert _infer(port, [[1.0, 2.0, 3.0, 4.0]]).json()["model_version"] == "model_step_2.pt"


def test_auth_bad_input_and_model_errors(tmp_path, served):
    port, stack = served
    save_model(tmp_path / "models" / "model_step_1.pt", seed=5, refuse_inf=True)
    wait_for(lambda: _get(port, "/readyz").status_code == 200, 30, 0.2)
    assert _get(port, "/healthz", auth=False).status_code == 200
    for path in ("/readyz", "/model", "/metrics"):
        assert _get(port, path, auth=False).status_code == 401
    wrong = requests.post(f"http://127.0.0.1:{port}/infer", headers={"Authorization": "Bearer nope"},
                          json={"inputs": {"x": [[1, 2, 3, 4]]}}, timeout=10)
    assert wrong.status_code == 401
    cases = [
        ({"inputs": {"x": [[1.0, 2.0], [3.0]]}}, "not a rectangular"),
        ({"inputs": {"x": {"data": [[1.0, 2.0, 3.0, 4.0]], "shape": [2, 4]}}}, "shape says [2, 4]"),
        ({"inputs": {"x": [[1, 2, 3, 4]]}, "dtype": "complex"}, "dtype 'complex' is not supported"),
        ({"x": [[1, 2, 3, 4]]}, "expected a JSON object"),
    ]
    for body, problem in cases:
        response = requests.post(f"http://127.0.0.1:{port}/infer", headers=AUTH, json=body, timeout=10)
        assert response.status_code == 422 and problem in response.json()["error"], (body, response.text)
    huge = requests.post(f"http://127.0.0.1:{port}/infer", headers={**AUTH, "Content-Type": "application/json"},
                         data=b"[" + b"1.0," * (5 * 2**20) + b"1.0]", timeout=30)
    assert huge.status_code == 413 and "INFERENCE_MAX_BODY_MB" in huge.json()["error"]
    assert _get(port, "/openapi.json").status_code == 404 and _get(port, "/openapi.json", auth=False).status_code == 404
    nan = requests.post(f"http://127.0.0.1:{port}/infer", headers={**AUTH, "Content-Type": "application/json"},
                        data=b'{"inputs": {"x": [[NaN, 1.0, 2.0, 3.0]]}}', timeout=10)
    assert nan.status_code == 200 and None in nan.json()["outputs"][0], "NaN out is null: valid JSON, not a 500"
    # Well-formed input the model itself fails on: a 500, its traceback logged once however often it comes.
    failing = [_infer(port, [[1e39, 1.0, 2.0, 3.0]]) for _ in range(3)]  # inf once cast to float32
    assert [f.status_code for f in failing] == [500] * 3
    assert set(failing[0].json()) == {"error", "request_id"} and "Traceback" not in failing[0].text
    wait_for(lambda: failing[-1].json()["request_id"] in stack.output, 10, 0.2)
    assert stack.output.count("Traceback (most recent call last)") == 1, stack.output[-3000:]
    assert stack.output.count("the model cannot take infinite values (its traceback is logged above, once)") == 2
    assert TOKEN not in stack.output


def test_every_malformed_input_is_a_4xx_with_a_one_line_reason_and_no_traceback(tmp_path, served):
    """Inputs the model's signature does not take (names, dtypes, ranks, sizes) are the client's mistake: a 4xx
    saying what is wrong, checked before the model runs on them (a refused signature is remembered), never a
    500 with a traceback in the log."""
    port, stack = served
    save_model(tmp_path / "models" / "model_step_1.pt", seed=5)
    wait_for(lambda: _get(port, "/readyz").status_code == 200, 30, 0.2)
    row = [1.0, 2.0, 3.0, 4.0]
    cases = [
        ({"inputs": {"x": [[1.0, 2.0, 3.0]]}}, "x float32 [*, 3]"),  # 3 features for a 4-feature model
        ({"inputs": {"x": []}}, "no rows"),
        ({"inputs": {"x": [[]]}}, "x float32 [*, 0]"),
        ({"inputs": {"x": [row], "mask": [row]}}, "x float32 [*, 4], mask float32 [*, 4]"),  # an extra input
        ({"inputs": {"x": {"data": [[1, 2, 3, 4]], "dtype": "int64"}}}, "x int64 [*, 4]"),
        ({"inputs": {"x": {"data": [row], "dtype": "float16"}}}, "x float16 [*, 4]"),
        ({"inputs": {"x": {"data": [[True, False, True, True]], "dtype": "bool"}}}, "x bool [*, 4]"),
        ({"inputs": {"x": {"data": [[1, 2, 3, 4]], "dtype": "uint8"}}}, "x uint8 [*, 4]"),
        ({"inputs": {"x": {"data": row * 4, "shape": 16}}}, "shape 16 is not a list of sizes"),
    ]
    for attempt in range(2):  # the second time, a refused signature is answered without the model
        for body, problem in cases:
            answer = requests.post(f"http://127.0.0.1:{port}/infer", headers=AUTH, json=body, timeout=10)
            assert 400 <= answer.status_code < 500 and problem in answer.json()["error"], (body, answer.text)
            assert "\n" not in answer.json()["error"], answer.text
    assert "Traceback" not in stack.output, stack.output[-3000:]
    assert stack.output.count("the model does not take inputs x float32 [*, 3]") == 1, "logged once, not per request"
    assert _infer(port, [row]).status_code == 200, "good input still served"


def test_silent_and_slow_clients_hold_no_connection(tmp_path, stack_factory):
    """Connections that send nothing, or a header byte now and then, are closed once the request head is
    over INFERENCE_HEADER_TIMEOUT_SECONDS late; an idle keep-alive connection after INFERENCE_KEEP_ALIVE_SECONDS."""
    import socket

    port = free_port()
    (tmp_path / "models").mkdir()
    stack = stack_factory(_env(tmp_path, port, INFERENCE_HEADER_TIMEOUT_SECONDS="1", INFERENCE_KEEP_ALIVE_SECONDS="1"))
    wait_for(lambda: _get(port, "/healthz", auth=False), 60, 0.2, lambda: stack.output[-2000:])
    silent = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(200)]
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    kept = socket.create_connection(("127.0.0.1", port), timeout=30)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(4096).startswith(b"HTTP/1.1 200")

    def closed_by_server(sock: socket.socket) -> bool:
        while True:  # the server's close reads as the end of the stream (after any answer it sent)
            try:
                if not sock.recv(4096):
                    return True
            except ConnectionResetError:
                return True

    for sock in [*silent, kept]:
        assert closed_by_server(sock)
    dripped = 0
    try:
        while True:  # a header byte every 0.2 s: never complete, so closed at the deadline all the same
            slow.sendall(b"X")
            dripped += 1
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert dripped < 100, "a dripping head was held for 20 s"
    assert _get(port, "/healthz", auth=False).status_code == 200


@pytest.mark.parametrize("open_api", [False, True])
def test_without_a_token_set_one_is_generated_and_reload_always_needs_it(open_tmp, stack_factory, open_api):
    port = free_port()
    (open_tmp / "models").mkdir()
    env = {**_env(open_tmp, port, SSH_USER="pvtest"), "INFERENCE_API_TOKEN": ""}
    if open_api:
        env["INFERENCE_ALLOW_UNAUTHENTICATED"] = "true"
    stack = stack_factory(env)
    wait_for(lambda: _get(port, "/healthz", auth=False), 60, 0.2, lambda: stack.output[-2000:])
    token_file = open_tmp / "state" / "services" / "inference" / "token"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token_file.stat().st_uid == pwd.getpwnam("pvtest").pw_uid, "the login user can read it"
    with_token = {"Authorization": f"Bearer {token}"}
    anonymous = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code
    assert anonymous == (200 if open_api else 401)
    assert requests.get(f"http://127.0.0.1:{port}/metrics", headers=with_token, timeout=10).status_code == 200
    assert requests.post(f"http://127.0.0.1:{port}/reload", timeout=10).status_code == 401
    assert requests.post(f"http://127.0.0.1:{port}/reload", headers=with_token, timeout=10).status_code == 200
    assert f"cat {token_file}" in stack.status()["services"]["inference"]["summary"]
    assert f"cat {token_file}" in stack.output and token not in stack.output


def test_without_torch_the_api_stays_up_and_not_ready(tmp_path, stack_factory):
    hidden = tmp_path / "no-torch" / "torch"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('torch is hidden for this test')\n")
    port = free_port()
    (tmp_path / "models").mkdir()
    save_model(tmp_path / "models" / "model_step_1.pt", seed=6)
    stack = stack_factory({**_env(tmp_path, port), "PYTHONPATH": str(tmp_path / "no-torch")})
    wait_for(lambda: "torch" in getattr(_get(port, "/readyz"), "text", ""), 60, 0.2,
             lambda: f"{getattr(_get(port, '/readyz'), 'text', None)} {stack.output[-2000:]}")
    not_ready = _get(port, "/readyz")
    assert not_ready.status_code == 503 and "torch is not installed" in not_ready.json()["reason"]
    assert _get(port, "/healthz", auth=False).status_code == 200
    pid = stack.status()["services"]["inference"]["pid"]
    # A forced reload answered is the positive signal: the model load ran again, without torch, in the same process.
    again = requests.post(f"http://127.0.0.1:{port}/reload", headers=AUTH, timeout=60).json()
    assert again["reloaded"] is False and again["model"] is None, again
    assert stack.status()["services"]["inference"]["pid"] == pid
    assert stack.state("inference") == "RUNNING"
    assert stack.output.count("spawned: 'inference'") == 1, "no crash loop"


def test_torch_export_program_and_a_user_handler(tmp_path, stack_factory):
    (tmp_path / "models").mkdir()
    net = Net(7).eval()
    program = torch.export.export(net, (torch.randn(2, 4),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(tmp_path / "models" / "model_step_1.pt2"))
    os.utime(tmp_path / "models" / "model_step_1.pt2", (time.time() - 5, time.time() - 5))
    port = free_port()
    stack = stack_factory(_env(tmp_path, port))
    wait_for(lambda: (_get(port, "/readyz") or requests.Response()).status_code == 200, 60, 0.3,
             lambda: stack.output[-2000:])
    assert _get(port, "/model").json()["format"] == "torch.export"
    rows = [[0.5, -0.5, 1.0, 2.0]]
    assert_close(_infer(port, rows).json()["outputs"], net(torch.tensor(rows)).detach())
    assert stack.stop() == 0

    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "my_handler.py").write_text(
        "def make(path, device):\n"
        "    scale = float(open(path).read())\n"
        "    return lambda batch: {'scaled': batch['x'] * scale, 'device': batch['x'].sum() * 0}\n")
    (tmp_path / "handled").mkdir()
    (tmp_path / "handled" / "scale_step_3.pt").write_text("3.0")
    os.utime(tmp_path / "handled" / "scale_step_3.pt", (time.time() - 5, time.time() - 5))
    port = free_port()
    env = {**_env(tmp_path, port, INFERENCE_HANDLER="my_handler:make", INFERENCE_MODEL_DIR=str(tmp_path / "handled")),
           "PYTHONPATH": str(handlers)}
    env["PODVISOR_STATE_DIR"] = str(tmp_path / "state2")
    stack = stack_factory(env)
    wait_for(lambda: (_get(port, "/readyz") or requests.Response()).status_code == 200, 60, 0.3,
             lambda: stack.output[-2000:])
    assert _get(port, "/model").json()["format"] == "handler"
    answer = _infer(port, [[1.0, 2.0]])
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["scaled"] == [[3.0, 6.0]]


def test_a_500_mb_chunked_body_is_refused_while_it_is_read(tmp_path, served):
    """No Content-Length to refuse it by: the API counts while it reads, and never holds more than the limit
    (it buffered the whole body first, 800 MB took 1.8 GB of RSS: any client with the token could run the pod out
    of memory)."""
    import psutil

    port, stack = served
    server = psutil.Process(stack.status()["services"]["inference"]["pid"])
    before, peak, done = server.memory_info().rss, [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    def body():
        chunk = b"1.0," * (1 << 18)  # 1 MB
        for _ in range(500):
            yield chunk

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/infer", headers=AUTH, data=body(), timeout=120)
        status = answer.status_code
    except requests.ConnectionError:  # answered and closed while the client was still sending
        status = None
    finally:
        done.set()
        sampler.join(5)
    grew = (peak[0] - before) / 2**20
    print(f"\nchunked 500 MB body: RSS {before / 2**20:.0f} MB before, peak {peak[0] / 2**20:.0f} MB "
          f"(+{grew:.0f} MB), answer {status}")
    assert grew < 50, f"the API held {grew:.0f} MB of a body it should have refused"
    assert status in (413, None)
    assert _get(port, "/healthz", auth=False).status_code == 200, "the API did not survive it"


def test_with_batching_off_each_request_is_its_own_call_on_the_one_model_thread():
    """INFERENCE_MAX_BATCH=1 skips the batching queue: each request is one model call with its own rows, never two
    calls at once (the model is not thread-safe), and each caller gets its own answer."""
    from services.inference.batching import Batcher

    calls, threads, busy, overlapped = [], set(), threading.Lock(), []

    def model(batch):
        if not busy.acquire(blocking=False):
            overlapped.append(True)
            busy.acquire()
        try:
            threads.add(threading.get_ident())
            calls.append(batch["x"].shape[0])
            time.sleep(0.002)
            return batch["x"] * 2
        finally:
            busy.release()

    sizes = []

    async def burst():
        batcher = Batcher(model, max_batch=1, max_wait_ms=5, observe=sizes.append)
        batcher.start()
        return await asyncio.gather(*[batcher.submit({"x": torch.full((1, 2), float(i))}, ("x",), 1)
                                      for i in range(40)])

    answers = asyncio.run(burst())
    assert [a.tolist() for a in answers] == [[[2.0 * i, 2.0 * i]] for i in range(40)]
    assert calls == [1] * 40 and sizes == [1] * 40
    assert len(threads) == 1 and not overlapped
