"""The HTTP service, for real: uvicorn on a free localhost port, the tiny model, an HTTP client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import httpx
import pytest
import yaml
from constants import MESSAGE, PROJECT_ROOT, QUESTION
from helpers import write_abstention_file

from medjson.workspace.service import running_service

pytestmark = pytest.mark.slow  # a real service in a subprocess, with a model


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    """One service for the module's tests, its output (stdout and stderr) in a log file they can read."""
    folder = tmp_path_factory.mktemp("serve")
    log = folder / "serve.log"
    with running_service(folder, tiny_model, log=log, max_wait_ms=50, max_batch_size=8) as (url, _):
        yield url, log


@pytest.fixture(scope="module")
def service(served):
    return served[0]


def test_one_answer_is_schema_valid_and_echoes_the_id(service):
    response = httpx.post(f"{service}/v1/answer", json=QUESTION, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "q1" and answer["valid"] is True and answer["error"] is None
    assert answer["predicted_category"] in "ABCD" and 0 <= answer["confidence"] <= 1
    assert isinstance(answer["reason"], str)
    assert answer["meta"]["decoding"] == "constrained" and answer["meta"]["latency_ms"] > 0
    assert 0 < answer["meta"]["letter_probability"] <= 1


def test_a_batch_answers_every_question_in_order(service):
    questions = [{**QUESTION, "id": i, "question": f"Question {i}?"} for i in range(5)]
    response = httpx.post(f"{service}/v1/answer/batch", json={"questions": questions}, timeout=60)
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert [a["id"] for a in answers] == [str(i) for i in range(5)] and all(a["valid"] for a in answers)


def test_concurrent_requests_are_all_answered_in_shared_batches(service):
    before = httpx.get(f"{service}/health").json()["batches_run"]

    async def ask_all():
        async with httpx.AsyncClient(timeout=120) as client:
            requests = [
                client.post(f"{service}/v1/answer", json={**QUESTION, "id": f"c{i}", "question": f"Concurrent {i}?"})
                for i in range(16)
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(ask_all())
    assert [r.status_code for r in responses] == [200] * 16
    assert sorted(r.json()["id"] for r in responses) == sorted(f"c{i}" for i in range(16))
    batches = httpx.get(f"{service}/health").json()["batches_run"] - before
    assert batches < 16, "every request ran alone: no dynamic batching"


@pytest.mark.parametrize(
    "body, field",
    [
        ({**QUESTION, "options": ["a", "b", "c"]}, "options"),
        ({**QUESTION, "options": ["a", "b", "c", "d", "e"]}, "options"),
        ({"options": QUESTION["options"]}, "question"),
        ({**QUESTION, "question": "x" * 5000}, "question"),
        ({**QUESTION, "options": ["a", "b", "", "d"]}, "options"),
        ({**QUESTION, "options": ["a", "b", "c", "d" * 600]}, "options"),
    ],
)
def test_a_bad_request_gets_a_422_naming_its_field(service, body, field):
    response = httpx.post(f"{service}/v1/answer", json=body, timeout=30)
    assert response.status_code == 422
    assert field in [part for error in response.json()["detail"] for part in map(str, error["loc"])]


def test_a_bad_request_does_not_fail_the_good_ones_beside_it(service):
    async def mixed():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                client.post(f"{service}/v1/answer", json=QUESTION),
                client.post(f"{service}/v1/answer", json={**QUESTION, "options": ["only one"]}),
                client.post(f"{service}/v1/answer", json={**QUESTION, "id": "q2"}),
            )

    good, bad, other = asyncio.run(mixed())
    assert (good.status_code, bad.status_code, other.status_code) == (200, 422, 200)


def test_schema_health_and_docs(service):
    schema = httpx.get(f"{service}/v1/schema").json()
    assert schema["properties"]["predicted_category"]["enum"] == ["A", "B", "C", "D"]
    assert schema["additionalProperties"] is False
    assert httpx.get(f"{service}/openapi.json").json()["paths"].keys() >= {"/v1/answer", "/v1/answer/batch"}
    docs = httpx.get(f"{service}/docs").text
    assert "swagger" in docs.lower() and "cdn.jsdelivr" not in docs


def test_every_request_ends_within_the_timeout(tmp_path, tiny_model):
    log = tmp_path / "serve.log"
    with running_service(tmp_path, tiny_model, log=log, request_timeout_s=0.001) as (url, _):
        response = httpx.post(f"{url}/v1/answer", json=QUESTION, timeout=30)
        assert response.status_code == 504 and "request_timeout_s" in response.json()["detail"]
        chat = {"model": str(tiny_model), "messages": [{"role": "user", "content": MESSAGE}]}
        timed_out = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=30)
        assert timed_out.status_code == 504 and timed_out.json()["error"]["code"] == "timeout"
        # A stream has sent its status already: the timeout is its last event, in OpenAI's error shape.
        streamed = httpx.post(f"{url}/v1/chat/completions", json={**chat, "stream": True}, timeout=30)
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "timeout"
        assert httpx.get(f"{url}/health").json()["status"] == "ok"  # the service carries on
        assert "never retrieved" not in log.read_text()  # a 504 is its record: no error entry beside it


def test_the_service_marks_answers_below_the_fitted_threshold(tmp_path, tiny_model):
    fitted = write_abstention_file(tmp_path / "abstention.json", tiny_model, "constrained", threshold=None)
    with running_service(tmp_path, tiny_model, abstention=str(fitted)) as (url, _):
        health = httpx.get(f"{url}/health").json()
        assert health["abstention"] == str(fitted) and health["abstention_threshold"] is None
        answer = httpx.post(f"{url}/v1/answer", json=QUESTION, timeout=60).json()
        assert answer["valid"] and answer["meta"]["abstained"] is True  # no threshold reached: all abstain
        assert (
            answer["meta"]["confidence_source"] == "letter"
            and answer["confidence"] == answer["meta"]["letter_probability"]
        )


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_model):
    """A service with short limits."""
    folder = tmp_path_factory.mktemp("guarded")
    with running_service(
        folder,
        tiny_model,
        max_prompt_tokens=300,
        max_body_bytes=20_000,
        header_timeout_s=1,
        body_timeout_s=1,
        max_question_chars=4000,
    ) as (url, process):
        yield url, process


def _raw(url: str, data: bytes, wait_s: float = 0.0) -> bytes:
    """Send raw bytes to the service, wait, and return whatever it answers until it closes."""
    import time

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(data)
        time.sleep(wait_s)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return received


def test_a_prompt_over_the_token_limit_is_a_422_before_it_queues(guarded):
    url, _ = guarded
    cjk = "肝" * 1500  # within the character limit, but about three tokens a character
    response = httpx.post(f"{url}/v1/answer", json={**QUESTION, "question": cjk}, timeout=30)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "question"] and "max_prompt_tokens = 300" in error["msg"]
    assert len(response.content) < 1000  # an excerpt, never the question back
    batch = httpx.post(f"{url}/v1/answer/batch", json={"questions": [QUESTION, {**QUESTION, "question": cjk}]})
    assert batch.status_code == 422 and batch.json()["detail"][0]["loc"] == ["body", "questions", 1, "question"]
    assert httpx.post(f"{url}/v1/answer", json=QUESTION, timeout=60).status_code == 200


def test_a_422_shows_only_an_excerpt_of_what_was_sent(guarded):
    url, _ = guarded
    response = httpx.post(f"{url}/v1/answer", json={**QUESTION, "question": "x" * 5000}, timeout=30)
    assert response.status_code == 422 and len(response.content) < 1000
    assert "(5000 characters)" in response.json()["detail"][0]["input"]


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"id": NaN, "question": "Which nerve?", "options": ["a", "b", "c", "d"]}', "id"),
        (b'{"question": NaN, "options": ["a", "b", "c", "d"]}', "question"),
        (b'{"question": "Which \\ud800 nerve?", "options": ["a", "b", "c", "d"]}', "question"),
        (b'{"question": "Which nerve?", "options": ["a", "\\udfff", "c", "d"]}', "options"),
    ],
)
def test_nan_and_lone_surrogates_are_a_422_never_a_500(guarded, body, field):
    url, _ = guarded
    response = httpx.post(f"{url}/v1/answer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"][0]["loc"]


def test_a_body_over_the_size_limit_is_a_413(guarded):
    url, _ = guarded
    big = json.dumps({**QUESTION, "question": "y" * 30_000})
    response = httpx.post(f"{url}/v1/answer", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "more than 20000" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(30):
            yield b"z" * 1000

    streamed = httpx.post(f"{url}/v1/answer", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_stalled_clients_are_cut_off(guarded):
    url, _ = guarded
    # Headers that never end: the connection is closed after serve.header_timeout_s, with nothing sent.
    assert _raw(url, b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\n", wait_s=2.5) == b""
    # A body that never arrives: a 408 after serve.body_timeout_s.
    head = (
        b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    assert _raw(url, head, wait_s=2.5).startswith(b"HTTP/1.1 408")
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_no_question_text_reaches_the_log(served):
    url, log = served
    secret = "Patient Zebediah Quarrington, 43, presents with"
    answered = httpx.post(f"{url}/v1/answer", json={**QUESTION, "question": secret + " chest pain?"}, timeout=60)
    refused = httpx.post(f"{url}/v1/answer", json={**QUESTION, "question": secret + "?", "options": ["a"]}, timeout=60)
    assert (answered.status_code, refused.status_code) == (200, 422)
    text = log.read_text()  # each line is flushed as it is logged: the access log of both requests is in
    assert text.count("POST /v1/answer HTTP/1.1") >= 2 and "Zebediah" not in text


def test_command_line_errors_name_the_command_line_and_a_context_too_small_is_refused(tmp_path, tiny_model):
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["serve"].update(model=str(tiny_model), abstention=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = [sys.executable, "-m", "medjson.commands.serve", "--params", str(tmp_path / "params.yaml")]
    bad_port = subprocess.run(command + ["--port", "-1"], capture_output=True, text=True, timeout=120)
    assert bad_port.returncode == 1 and "the command line: `serve.port` = -1 is out of range" in bad_port.stderr
    too_long = subprocess.run(command + ["--max-prompt-tokens", "5000"], capture_output=True, text=True, timeout=120)
    assert too_long.returncode == 1 and "can hold; lower max_prompt_tokens" in too_long.stderr
    assert "Traceback" not in bad_port.stderr + too_long.stderr
