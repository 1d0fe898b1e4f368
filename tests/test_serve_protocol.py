"""The service as the servers it imitates hold: streaming, cancellation, error shapes, OpenAI's schemas
both ways, secrets kept out of logs, the confidence an answer carries. Real services over HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from constants import MESSAGE, PROJECT_ROOT
from helpers import write_abstention_file

from medjson.serving.errors import ApiError
from medjson.serving.openai_requests import read_chat_request
from medjson.workspace.service import running_service

SCHEMAS = json.loads((Path(__file__).parent / "openai_response.schemas.json").read_text(encoding="utf-8"))
MODEL = "models/grpo_merged"
KEY = "sk-protocol-test"


def openai_valid(kind: str, value: dict) -> None:
    """``value`` is valid under OpenAI's published schema ``kind`` (pinned in openai_response.schemas.json)."""
    from jsonschema import Draft202012Validator

    Draft202012Validator({**SCHEMAS, "$ref": f"#/$defs/{kind}"}).validate(value)


def _body(**changes) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": MESSAGE}], **changes}


@pytest.mark.parametrize(
    "change",
    [
        {"n": None},
        {"n": 1},
        {"tool_choice": "none"},
        {"tools": []},
        {"temperature": 2, "top_p": 0, "presence_penalty": -2, "frequency_penalty": 2},
        {"max_tokens": None, "stream": None, "stream_options": None, "seed": None},
        {"messages": [{"role": "developer", "content": "Answer as JSON."}, {"role": "user", "content": MESSAGE}]},
        {"response_format": {"type": "text"}},
        {"user": "u-1", "metadata": {"k": "v"}, "store": False},
    ],
)
def test_what_openai_accepts_is_accepted(change):
    assert read_chat_request(_body(**change), MODEL).question == "Which nerve supplies the deltoid?"


@pytest.mark.parametrize(
    "change, param",
    [
        ({"temperature": 5}, "temperature"),
        ({"presence_penalty": 9}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"top_p": 1.5}, "top_p"),
        ({"messages": [{"role": "wizard", "content": MESSAGE}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": "answer"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": ["answer"]}}, "response_format.json_schema"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": "7"}, "seed"),
        ({"stream_options": "usage"}, "stream_options"),
        ({"max_tokens": 2.5}, "max_tokens"),
    ],
)
def test_what_openai_refuses_is_a_400_naming_the_field(change, param):
    with pytest.raises(ApiError) as refused:
        read_chat_request(_body(**change), MODEL)
    assert refused.value.status == 400 and refused.value.param == param
    assert len(refused.value.message) < 300  # names the field; never echoes the value whole


def test_a_missing_model_is_a_400_and_another_model_a_404_with_an_excerpt():
    body = _body()
    del body["model"]
    with pytest.raises(ApiError) as missing:
        read_chat_request(body, MODEL)
    assert missing.value.status == 400 and "model" in missing.value.message
    with pytest.raises(ApiError) as other:
        read_chat_request(_body(model="m" * 1_500_000), MODEL)
    assert other.value.status == 404 and other.value.code == "model_not_found" and len(other.value.message) < 400


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_model):
    """Keys, an abstention file on the letter probability (the content carries the calibrated confidence)."""
    folder = tmp_path_factory.mktemp("protocol")
    fitted = write_abstention_file(folder / "abstention.json", tiny_model, "constrained", threshold=0.0)
    log = folder / "serve.log"
    with running_service(
        folder, tiny_model, env={"MEDJSON_API_KEYS": KEY}, log=log, abstention=str(fitted), max_body_bytes=4096
    ) as (url, _):
        yield url, str(tiny_model), log


def _auth(key: str = KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _chat(url: str, model: str, **changes) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": MESSAGE}], **changes}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=_auth(), timeout=120)


def _events(response: httpx.Response) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.slow
def test_streamed_deltas_are_the_answer_token_by_token_and_every_object_is_openais(keyed):
    url, model, _ = keyed
    whole = _chat(url, model)
    openai_valid("CreateChatCompletionResponse", whole.json())
    content = whole.json()["choices"][0]["message"]["content"]
    extra = whole.json()["medjson"]
    # The calibrated confidence is the content's; the model's own number stays beside it.
    assert json.loads(content)["confidence"] == extra["confidence"] == extra["calibrated_confidence"]
    assert extra["confidence_source"] == "letter" and extra["stated_confidence"] is not None

    body = {"model": model, "messages": [{"role": "user", "content": MESSAGE}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    arrivals = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=_auth(), timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in response.iter_lines():
            arrivals.append(time.perf_counter())
            lines.append(line)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    for event in events:
        openai_valid("CreateChatCompletionStreamResponse", event)
    deltas = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    texts = [d for d in deltas if d]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(texts) == content  # the same text as the whole answer, calibrated confidence included
    usage = events[-1]["usage"]
    assert len(texts) >= usage["completion_tokens"] // 2  # token by token, not one chunk at the end
    assert events[-2]["choices"][0]["finish_reason"] == whole.json()["choices"][0]["finish_reason"]
    assert usage == whole.json()["usage"]


@pytest.mark.slow
def test_every_error_under_openais_routes_is_its_error_object(keyed):
    url, model, log = keyed
    cases = {
        "unknown /v1 path": httpx.get(f"{url}/v1/engines", headers=_auth()),
        "wrong method": httpx.delete(f"{url}/v1/chat/completions", headers=_auth()),
        "no key": httpx.get(f"{url}/v1/models"),
        "key in the query": httpx.get(f"{url}/v1/models?api_key={KEY}"),
        "two keys": httpx.get(f"{url}/v1/models", headers=[("Authorization", "Bearer x"), *_auth().items()]),
        "too large": httpx.post(f"{url}/v1/chat/completions", content=b"{" + b" " * 5000 + b"}", headers=_auth()),
        "too deep": httpx.post(f"{url}/v1/chat/completions", content=b"[" * 1000 + b"]" * 1000, headers=_auth()),
        "not JSON": httpx.post(f"{url}/v1/chat/completions", content=b"{nope", headers=_auth()),
        "schema as a string": _chat(url, model, response_format={"type": "json_schema", "json_schema": "answer"}),
        "an unknown model": httpx.get(f"{url}/v1/models/gpt-4o", headers=_auth()),
        "the key as a model": httpx.get(f"{url}/v1/models/{KEY}", headers=_auth()),
        "unreadable message": _chat(url, model, messages=[{"role": "user", "content": "What is the deltoid?"}]),
    }
    statuses = {name: response.status_code for name, response in cases.items()}
    assert statuses == {
        "unknown /v1 path": 404,
        "wrong method": 405,
        "no key": 401,
        "key in the query": 401,
        "two keys": 401,
        "too large": 413,
        "too deep": 400,
        "not JSON": 400,
        "schema as a string": 400,
        "an unknown model": 404,
        "the key as a model": 404,
        "unreadable message": 400,
    }
    for name, response in cases.items():
        assert response.headers["content-type"] == "application/json", name
        openai_valid("ErrorResponse", response.json())
    assert cases["schema as a string"].json()["error"]["param"] == "response_format.json_schema"
    # The service's own routes keep their shape, in JSON too.
    own = httpx.get(f"{url}/nowhere", headers=_auth())
    assert own.status_code == 404 and "detail" in own.json()
    openai_valid("Model", httpx.get(f"{url}/v1/models/{model}", headers=_auth()).json())
    openai_valid("ListModelsResponse", httpx.get(f"{url}/v1/models", headers=_auth()).json())
    text = log.read_text()
    assert KEY not in text and "/v1/models?<query not logged: 1 parameter>" in text and "Traceback" not in text
    assert '"GET /v1/models/<redacted> HTTP/1.1" 404' in text  # a key is no part of any logged URL


def _hang_up_after(url: str, path: str, body: dict, seconds: float) -> None:
    """Send a request and close the connection before its answer comes."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(head.encode() + payload)
        time.sleep(seconds)


def _metric(url: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics").text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def long_answers(tmp_path_factory, tiny_model):
    """Free decoding with a long budget: the random model writes until it, so a request takes seconds."""
    folder = tmp_path_factory.mktemp("long")
    log = folder / "serve.log"
    with running_service(
        folder, tiny_model, log=log, decoding="free", max_new_tokens=1500, max_prompt_tokens=300, max_wait_ms=200
    ) as (url, _):
        yield url, str(tiny_model), log


@pytest.mark.slow
def test_a_client_that_hangs_up_stops_its_rows_at_once(long_answers):
    url, model, log = long_answers
    question = {"question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]}
    started = time.perf_counter()
    full = httpx.post(f"{url}/v1/answer", json=question, timeout=120).json()
    full_seconds = time.perf_counter() - started
    tokens = full["meta"]["new_tokens"]
    assert tokens > 300  # long enough for a client to leave halfway
    before = _metric(url, "medjson_generated_tokens_total")
    chat = {"model": model, "messages": [{"role": "user", "content": MESSAGE}]}
    leavers = [
        threading.Thread(target=_hang_up_after, args=(url, "/v1/answer", question, full_seconds / 5)),
        threading.Thread(target=_hang_up_after, args=(url, "/v1/answer", question, full_seconds / 5)),
        threading.Thread(target=_hang_up_after, args=(url, "/v1/chat/completions", chat, full_seconds / 5)),
        threading.Thread(
            target=_hang_up_after, args=(url, "/v1/chat/completions", {**chat, "stream": True}, full_seconds / 5)
        ),
    ]
    for thread in leavers:
        thread.start()
    for thread in leavers:
        thread.join()
    deadline = time.time() + 60
    while _metric(url, "medjson_requests_total", status="499") < 4 and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the batch ends at its next step once every row's caller has gone
    spent = _metric(url, "medjson_generated_tokens_total") - before
    assert _metric(url, "medjson_requests_total", status="499") == 4
    assert spent < 4 * tokens * 0.6, f"{spent} tokens generated for 4 callers who left, {tokens} each if answered"
    text = log.read_text()
    assert text.count('" 499 ') == 4  # and the access log has each of them...
    assert "never retrieved" not in text and " ERROR " not in text  # ...as the only record of a client that left


@pytest.mark.slow
def test_an_unexpected_error_is_a_json_500_logged_once_with_its_traceback(tiny_model, caplog):
    import dataclasses
    import logging

    import uvicorn

    from medjson.model.answering import Answerer
    from medjson.params import load_params
    from medjson.serving.app import service_app
    from medjson.workspace.service import free_port

    params = load_params(PROJECT_ROOT / "params.yaml")
    settings = dataclasses.replace(params.serve, model=str(tiny_model), abstention=None, max_new_tokens=72)
    answerer = Answerer(str(tiny_model), params.model, "constrained", 72)

    def broken(question):
        raise RuntimeError("an internal detail no client should see")

    answerer.prompt_tokens = broken  # forced: nothing in the service raises on its own
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service_app(settings, answerer, []), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level(logging.ERROR):
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        try:
            chat = httpx.post(f"{url}/v1/chat/completions", json=_body(model=str(tiny_model)), timeout=30)
            own = httpx.post(f"{url}/v1/answer", json={"question": "Q?", "options": list("abcd")}, timeout=30)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    assert chat.status_code == own.status_code == 500
    openai_valid("ErrorResponse", chat.json())
    assert "detail" in own.json()
    assert "internal detail" not in chat.text + own.text
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2 and all(r.name == "medjson.serve" for r in tracebacks)  # once each, by us


def test_the_confidence_setting_is_a_serve_flag_with_its_choices():

    from medjson.commands.serve import settings_from

    params = ["--params", str(PROJECT_ROOT / "params.yaml")]
    assert settings_from(params)[0].confidence == "calibrated"  # the default: the abstention file's
    assert settings_from([*params, "--confidence", "stated"])[0].confidence == "stated"
    with pytest.raises(SystemExit):
        settings_from([*params, "--confidence", "letter"])


def test_the_documented_answer_is_the_answer_record_field_for_field():
    """The API documents /v1/answer with the record every route returns (model.answer_record), not a
    copy of it: the OpenAPI schema's fields are the record's, in order."""
    import dataclasses

    from fastapi import FastAPI

    from medjson.model.answer_record import AnswerMeta, AnswerRecord
    from medjson.serving import answer_routes

    app = FastAPI()
    app.include_router(answer_routes.router)
    schemas = app.openapi()["components"]["schemas"]
    assert list(schemas["AnswerRecord"]["properties"]) == [f.name for f in dataclasses.fields(AnswerRecord)]
    assert list(schemas["AnswerMeta"]["properties"]) == [f.name for f in dataclasses.fields(AnswerMeta)]
    answer = app.openapi()["paths"]["/v1/answer"]["post"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"]["$ref"].endswith("/AnswerRecord")


def test_a_record_writes_the_models_text_only_where_it_is_no_answer():
    from medjson.model.answer_record import AnswerMeta, AnswerRecord

    meta = AnswerMeta("m", "free", 1.0, 3, "stop", "stated", 0.5, None, 0.4, None, None, raw_output="prose")
    valid = AnswerRecord("q1", "A", 0.5, "r", True, None, meta)
    assert (
        "raw_output" not in valid.to_json()["meta"] and valid.with_latency(9.0).to_json()["meta"]["latency_ms"] == 9.0
    )
    invalid = AnswerRecord("q1", None, None, None, False, "not an answer", meta)
    assert invalid.to_json()["meta"]["raw_output"] == "prose"
