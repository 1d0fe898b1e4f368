"""OpenAI's interface on the service: request reading (fast), then the real `openai` client against uvicorn."""

from __future__ import annotations

import json
import logging
from typing import Literal

import httpx
import pytest
from constants import MESSAGE
from pydantic import BaseModel, Field

from medjson.core.parsing import ANSWER_SCHEMA
from medjson.serving.answer_schema import difference
from medjson.serving.errors import ApiError
from medjson.serving.openai_requests import read_chat_request, read_question_text
from medjson.workspace.service import running_service

MODEL = "models/grpo_merged"


class MedAnswer(BaseModel):
    """The answer as a client's own Pydantic model: what the openai client's structured-output helper sends."""

    predicted_category: Literal["A", "B", "C", "D"]
    confidence: float = Field(ge=0, le=1)
    reason: str


def _body(**changes) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": MESSAGE}], **changes}


def test_a_message_in_the_prompt_layout_gives_question_and_options():
    assert read_question_text(MESSAGE) == (
        "Which nerve supplies the deltoid?",
        ["Radial", "Axillary", "Ulnar", "Median"],
    )
    lettered = "Two lines\nof question\nA) one\nB) two\nC) three\nD) four\nAnswer:"
    assert read_question_text(lettered) == ("Two lines\nof question", ["one", "two", "three", "four"])
    for bad in (
        "Which nerve?\nA. Radial\nB. Axillary\nC. Ulnar",
        "A. a\nB. b\nC. c\nD. d",
        "Q?\nA. a\nC. c\nB. b\nD. d",
    ):
        with pytest.raises(ApiError, match="A. ...', 'B. ...'") as refused:
            read_question_text(bad)
        assert refused.value.status == 400 and refused.value.param == "messages"


def test_the_body_can_carry_question_and_options_and_content_parts_are_read():
    chat = read_chat_request(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "see below"}],
            "question": "Q?",
            "options": list("abcd"),
        },
        MODEL,
    )
    assert (chat.question, chat.options) == ("Q?", list("abcd"))
    parts = _body(messages=[{"role": "user", "content": [{"type": "text", "text": MESSAGE}]}])
    assert read_chat_request(parts, MODEL).options == ["Radial", "Axillary", "Ulnar", "Median"]


def test_schemas_equivalent_to_the_answer_pass_and_others_are_refused():
    assert difference(ANSWER_SCHEMA) is None
    assert difference(MedAnswer.model_json_schema()) is None
    unbounded = json.loads(json.dumps(ANSWER_SCHEMA))
    del unbounded["properties"]["confidence"]["minimum"], unbounded["properties"]["confidence"]["maximum"]
    assert difference(unbounded) is None
    for change in (
        lambda s: s["properties"].update(extra={"type": "string"}),
        lambda s: s["properties"]["predicted_category"].update(enum=["A", "B", "C", "D", "E"]),
        lambda s: s["properties"]["confidence"].update(type="string"),
        lambda s: s["properties"]["confidence"].update(minimum=0.5),
        lambda s: s.update(required=["reason"]),
    ):
        other = json.loads(json.dumps(ANSWER_SCHEMA))
        change(other)
        assert difference(other) is not None
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": other, "strict": True}}
        with pytest.raises(ApiError, match="GET /v1/schema"):
            read_chat_request(_body(response_format=fmt), MODEL)


def test_what_greedy_decoding_cannot_honour_is_refused_or_reported():
    for change, param in (
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "answer"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
    ):
        with pytest.raises(ApiError) as refused:
            read_chat_request(_body(**change), MODEL)
        assert refused.value.param == param and refused.value.status == 400
    with pytest.raises(ApiError, match="serves 'models/grpo_merged'") as other_model:
        read_chat_request(_body(model="gpt-4o"), MODEL)
    assert other_model.value.status == 404 and other_model.value.code == "model_not_found"
    chat = read_chat_request(_body(temperature=0.7, top_p=0.9, max_tokens=500, max_completion_tokens=40), MODEL)
    assert chat.ignored == ["temperature", "top_p"] and chat.max_tokens == 40


def test_serving_beyond_this_machine_without_keys_warns(caplog):
    from medjson.commands.serve import warn_if_open

    with caplog.at_level(logging.WARNING, logger="medjson.serve"):
        warn_if_open("127.0.0.1", [])
        warn_if_open("0.0.0.0", ["k"])
        assert not caplog.records
        warn_if_open("0.0.0.0", [])
    assert "no API key" in caplog.text


KEY = "sk-medjson-test-key"


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory, tiny_model):
    with running_service(
        tmp_path_factory.mktemp("openai"), tiny_model, env={"MEDJSON_API_KEYS": f"other-key,{KEY}"}, max_wait_ms=20
    ) as (url, _):
        yield url, str(tiny_model)


def _client(url: str, key: str = KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def _check_answer(content: str) -> dict:
    answer = json.loads(content)
    assert set(answer) == {"predicted_category", "confidence", "reason"}
    assert answer["predicted_category"] in "ABCD" and 0 <= answer["confidence"] <= 1
    return answer


@pytest.mark.slow
def test_the_openai_client_gets_schema_valid_answers_parsed_and_streamed(keyed_service):
    import openai

    url, model = keyed_service
    client = _client(url)
    assert [m.id for m in client.models.list()] == [model]
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}
    messages = [{"role": "user", "content": MESSAGE}]
    completion = client.chat.completions.create(model=model, messages=messages, response_format=schema, temperature=0.2)
    answer = _check_answer(completion.choices[0].message.content)
    usage = completion.usage
    # The service's budget is 72 tokens: an answer that reached its closing tokens was cut by it.
    finish = "length" if usage.completion_tokens >= 71 else "stop"
    assert completion.choices[0].finish_reason == finish and completion.object == "chat.completion"
    assert usage.prompt_tokens > 20 and usage.completion_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    extra = completion.model_extra["medjson"]
    assert extra["valid"] and extra["ignored"] == ["temperature"] and extra["decoding"] == "constrained"
    # The same question through the service's own route: the same answer (one answering path).
    own = httpx.post(
        f"{url}/v1/answer",
        json={"question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=120,
    ).json()
    assert own["predicted_category"] == answer["predicted_category"] and own["reason"] == answer["reason"]

    if finish == "stop":
        parsed = client.chat.completions.parse(model=model, messages=messages, response_format=MedAnswer)
        assert isinstance(parsed.choices[0].message.parsed, MedAnswer)
        assert parsed.choices[0].message.parsed.predicted_category == answer["predicted_category"]
    else:  # the tiny random model writes its reason to the budget: the client's helper refuses a cut answer
        with pytest.raises(openai.LengthFinishReasonError):
            client.chat.completions.parse(model=model, messages=messages, response_format=MedAnswer)

    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert _check_answer(streamed) == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish
    assert chunks[-1].usage.total_tokens == usage.total_tokens

    cut = client.chat.completions.create(model=model, messages=messages, max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5
    assert completion.choices[0].message.content.startswith(cut.choices[0].message.content)


@pytest.mark.slow
def test_keys_foreign_schemas_and_unreadable_messages_get_openai_errors_and_metrics_count_them(keyed_service):
    import openai
    from prometheus_client.parser import text_string_to_metric_families

    url, model = keyed_service
    messages = [{"role": "user", "content": MESSAGE}]
    for key in ("sk-wrong", f"{KEY}x", KEY[:-1]):
        with pytest.raises(openai.AuthenticationError, match="valid API key"):
            _client(url, key).chat.completions.create(model=model, messages=messages)
    keyless = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": messages})
    assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{url}/health").status_code == 200  # the probe needs no key
    assert httpx.get(f"{url}/metrics").status_code == 401

    client = _client(url)
    foreign = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError, match="GET /v1/schema"):
        client.chat.completions.create(model=model, messages=messages, response_format=foreign)
    with pytest.raises(openai.BadRequestError, match="four lines"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is the deltoid?"}])
    client.chat.completions.create(model=model, messages=messages)

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def requests(status: str) -> float:
        return samples.get(("medjson_requests_total", (("route", "/v1/chat/completions"), ("status", status))), 0)

    assert requests("401") >= 4 and requests("400") >= 2 and requests("200") >= 1
    assert samples[("medjson_answers_total", ())] >= 1 and samples[("medjson_generated_tokens_total", ())] > 0
    assert samples[("medjson_batch_size_count", ())] >= 1 and ("medjson_queue_depth", ()) in samples
    assert ("medjson_abstention_rate", ()) in samples
    assert samples[("medjson_request_seconds_count", (("route", "/v1/chat/completions"),))] >= 5


def test_metrics_count_answers_tokens_and_the_abstention_rate():
    from prometheus_client.parser import text_string_to_metric_families

    from medjson.model.answer_record import AnswerMeta, AnswerRecord
    from medjson.serving.metrics import ServiceMetrics

    def record(new_tokens: int, abstained: bool | None) -> AnswerRecord:
        meta = AnswerMeta("m", "constrained", 1.0, new_tokens, "stop", "letter", 0.5, 0.4, 0.4, abstained, 0.5)
        return AnswerRecord("q", "A", 0.4, "r", True, None, meta)

    metrics = ServiceMetrics({"/v1/answer", "/v1/models/{model_id:path}"})
    records = [record(n, a) for n, a in ((30, True), (40, False), (50, None))]
    metrics.generated(records)  # a batch: every row's tokens, delivered or not
    metrics.answered(records)
    metrics.answered(records[:1])
    text, _ = metrics.exposition()
    values = {s.name: s.value for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    assert values["medjson_answers_total"] == 4 and values["medjson_generated_tokens_total"] == 120
    assert values["medjson_abstained_answers_total"] == 2 and values["medjson_abstention_rate"] == 0.5
    assert metrics.route("/v1/answer") == "/v1/answer" and metrics.route("/wp-admin") == "other"
    assert metrics.route("/v1/models/models/grpo_merged") == "/v1/models/{model_id:path}"
