"""The openai backend over real HTTP on loopback: a scripted server, and `transformers serve`."""

from __future__ import annotations

import base64
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from vlm_fixtures import TEST_PROMPT, VALID_ANSWER, random_window, tiny_qwen3_vl_answering  # noqa: F401

from annotate.vlm import ANSWER_SCHEMA, VlmConfig, make_vlm_backend
from annotate.vlm.openai_backend import VlmServerError, backoff_delay

VALID_TEXT = json.dumps(VALID_ANSWER)
SERVER_SCRIPT = Path(__file__).with_name("vlm_chat_server.py")


def _read_line(process: subprocess.Popen, timeout_s: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout_s):
        raise RuntimeError(f"server printed nothing within {timeout_s} s")
    return process.stdout.readline()


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def chat_server():
    """URL of the scripted server; each test scripts it through :func:`script`."""
    process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(_read_line(process, 60))
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def script(server: str, **control) -> None:
    httpx.post(f"{server}/control", json=control, timeout=10).raise_for_status()


def stats(server: str) -> dict:
    return httpx.get(f"{server}/stats", timeout=10).json()


def backend_for(server: str, **changes):
    config = {"backend": "openai", "model": "scripted", "base_url": f"{server}/v1", "prompt": TEST_PROMPT,
              "timeout_s": 5.0, "backoff_s": 0.05, **changes}
    return make_vlm_backend(VlmConfig(**config))


def windows(count: int, seed: int = 0) -> list[list[bytes]]:
    rng = np.random.default_rng(seed)
    return [random_window(rng) for _ in range(count)]


def test_valid_answers_are_parsed_and_requests_carry_frames_in_order(chat_server):
    script(chat_server, default={"content": f"```json\n{VALID_TEXT}\n```"})
    frames = windows(2)
    answers = backend_for(chat_server, seed=7, max_new_tokens=99).assess(frames)
    assert [(a.ok, a.attempts) for a in answers] == [(True, 1), (True, 1)]
    assert json.loads(answers[1].answer_json) == VALID_ANSWER
    bodies = stats(chat_server)["bodies"]
    assert len(bodies) == 2
    for body in bodies:
        assert (body["model"], body["seed"], body["max_tokens"], body["temperature"]) == ("scripted", 7, 99, 0.0)
        assert body["response_format"]["json_schema"]["schema"] == ANSWER_SCHEMA
        assert body["response_format"]["json_schema"]["strict"] is True
    sent = {}
    for body in bodies:
        parts = body["messages"][0]["content"]
        assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"] and parts[-1]["text"] == TEST_PROMPT
        sent_frames = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts[:4]]
        sent[sent_frames[0]] = sent_frames
    assert sorted(sent.values()) == sorted(frames)


def test_malformed_answers_are_retried_then_recorded(chat_server):
    script(chat_server, default={"content": "I think the road is fine."})
    (answer,) = backend_for(chat_server, retries=2).assess(windows(1))
    assert (answer.ok, answer.attempts, answer.raw, answer.transient) == (False, 3, "I think the road is fine.", False)
    bodies = stats(chat_server)["bodies"]
    assert len(bodies) == 3
    assert "A previous answer was rejected (no JSON object" in bodies[2]["messages"][0]["content"][-1]["text"]


def test_malformed_then_valid_succeeds_on_the_second_attempt(chat_server):
    script(chat_server, queue=[{"content": VALID_TEXT.replace("0.75", "7.5")}], default={"content": VALID_TEXT})
    (answer,) = backend_for(chat_server).assess(windows(1))
    assert (answer.ok, answer.attempts) == (True, 2)


def test_server_errors_are_retried_with_backoff_then_succeed(chat_server):
    script(chat_server, queue=[{"status": 500}, {"status": 503}, {"status": 429, "retry_after": "0.3"}],
           default={"content": VALID_TEXT})
    start = time.monotonic()
    (answer,) = backend_for(chat_server, max_http_retries=3, backoff_s=0.1).assess(windows(1))
    elapsed = time.monotonic() - start
    assert (answer.ok, answer.attempts) == (True, 1)
    assert stats(chat_server)["requests"] == 4
    # back-off waited 0.1 s, then 0.2 s, then the server's Retry-After of 0.3 s
    assert elapsed >= 0.6


def test_persistent_server_errors_become_a_transient_failure(chat_server):
    script(chat_server, default={"status": 502})
    (answer,) = backend_for(chat_server, max_http_retries=2).assess(windows(1))
    assert (answer.ok, answer.raw, answer.transient, answer.attempts) == (False, None, True, 1)
    assert "HTTP 502" in answer.error and "after 3 tries" in answer.error
    assert stats(chat_server)["requests"] == 3


def test_timeouts_are_recorded_without_hanging(chat_server):
    script(chat_server, default={"sleep_s": 3.0, "content": VALID_TEXT})
    (answer,) = backend_for(chat_server, timeout_s=0.3, max_http_retries=1).assess(windows(1))
    assert (answer.ok, answer.transient) == (False, True)
    assert "timed out after 0.3 s" in answer.error
    assert stats(chat_server)["requests"] == 2


def test_client_errors_raise_instead_of_being_recorded(chat_server):
    script(chat_server, default={"status": 404})
    with pytest.raises(VlmServerError, match="HTTP 404"):
        backend_for(chat_server).assess(windows(1))
    assert stats(chat_server)["requests"] == 1


def test_concurrency_is_bounded(chat_server):
    script(chat_server, default={"content": VALID_TEXT}, delay_s=0.3)
    answers = backend_for(chat_server, concurrency=3).assess(windows(8))
    assert all(a.ok for a in answers)
    observed = stats(chat_server)
    assert observed["requests"] == 8 and observed["max_in_flight"] == 3


def test_unreachable_server_and_missing_key_fail_at_construction(chat_server, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match="no OpenAI-compatible server answers"):
        backend_for(f"http://127.0.0.1:{closed_port}")
    monkeypatch.delenv("DRIVE_VLM_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="DRIVE_VLM_TEST_KEY is not set"):
        backend_for(chat_server, api_key_env="DRIVE_VLM_TEST_KEY")


def test_backoff_doubles_and_is_capped():
    config = VlmConfig(backoff_s=0.5)
    assert [backoff_delay(config, n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(config, 20) == 30.0
    assert backoff_delay(config, 0, retry_after="2") == 2.0
    assert backoff_delay(config, 1, retry_after="Wed, 21 Oct 2015 07:28:00 GMT") == 1.0


@pytest.mark.slow
def test_transformers_serve_answers_through_the_openai_backend(tiny_qwen3_vl_answering, tmp_path):
    """`transformers serve` (an OpenAI-compatible server) serving the taught tiny model on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "serve.log").open("w")
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(tiny_qwen3_vl_answering), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not come up"
            time.sleep(0.5)
        backend = backend_for(f"http://127.0.0.1:{port}", model=str(tiny_qwen3_vl_answering), max_new_tokens=48,
                              timeout_s=120.0, concurrency=2)
        answers = backend.assess(windows(2, seed=3))
        assert [(a.ok, a.attempts) for a in answers] == [(True, 1), (True, 1)]
        assert all(json.loads(a.answer_json) == VALID_ANSWER for a in answers)
    finally:
        _stop(process)
        log.close()
