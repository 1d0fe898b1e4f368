"""OpenAI's chat-completions interface over the service's one answering path.

What an OpenAI client sends is read here into a ``Question`` and the response is built here;
``medjson.serve`` routes it through the same batcher, limits and abstention file as
``/v1/answer``. Everything greedy decoding cannot honour is refused (``n`` > 1, tools,
log-probabilities) or reported (sampling settings: ``medjson.ignored``), never silently
taken for done.

- The question: the last user message, in the project's own prompt layout (the question, then
  lines ``A. ...`` to ``D. ...``; ``A) ...`` also reads; a last line ``Answer:`` may follow), or
  the body's ``question`` and ``options`` (the openai client's ``extra_body``).
- ``response_format``: absent, ``json_object``, or a ``json_schema`` equivalent to the answer
  schema (same properties, types, letter enum and required keys; titles, descriptions,
  ``additionalProperties`` and ``strict`` do not matter). Any other schema is refused.
- The response: a ``chat.completion`` whose message content is the answer JSON, with ``usage``,
  and the calibrated confidence and abstention verdict under ``medjson``; or, with
  ``stream: true``, the same as server-sent ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from medjson.core.parsing import ANSWER_SCHEMA
from medjson.core.prompts import LETTERS

CHAT_ROUTE = "/v1/chat/completions"
SCHEMA_ROUTE = "/v1/schema"

# Sampling settings a greedy service cannot honour but can answer without: reported back.
IGNORED_SETTINGS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "stop", "logit_bias")

_OPTION_LINE = re.compile(r"^\s*([A-Da-d])\s*[.)]\s*(.*?)\s*$")
_QUESTION_PREFIX = re.compile(r"^\s*question\s*:\s*", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*answer\s*:?\s*$", re.IGNORECASE)
EXPECTED_LAYOUT = (
    "the last user message must hold the question, then four lines 'A. ...', 'B. ...', 'C. ...', 'D. ...' "
    "(or send `question` and `options` in the body)"
)


class ChatRequestError(Exception):
    """A request the service refuses, in OpenAI's error shape: status, message, offending parameter."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def error_body(message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"):
    """OpenAI's error object: what its clients read into their exceptions' messages."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "\n".join(parts)
    raise ChatRequestError(f"the last user message has no text content; {EXPECTED_LAYOUT}", "messages")


def read_question_text(text: str) -> tuple[str, list[str]]:
    """(question, options A-D) from a message in the project's prompt layout, or a 400 saying what was expected."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and _ANSWER_LINE.match(lines[-1]):
        lines = lines[:-1]
    if len(lines) < len(LETTERS) + 1:
        raise ChatRequestError(f"no question and four options could be read: {EXPECTED_LAYOUT}", "messages")
    option_lines = [_OPTION_LINE.match(line) for line in lines[-len(LETTERS) :]]
    letters = [m.group(1).upper() if m else None for m in option_lines]
    if letters != list(LETTERS) or not all(m.group(2) for m in option_lines):
        raise ChatRequestError(
            f"the message's last four lines are not the options A-D (read {letters}): {EXPECTED_LAYOUT}", "messages"
        )
    question = _QUESTION_PREFIX.sub("", "\n".join(lines[: -len(LETTERS)])).strip()
    if not question:
        raise ChatRequestError(f"the message has options but no question: {EXPECTED_LAYOUT}", "messages")
    return question, [m.group(2) for m in option_lines]


def question_parts(body: dict) -> tuple[str, list[str]]:
    """The question and options a chat request asks: its own fields, or its last user message."""
    if "question" in body or "options" in body:
        question, options = body.get("question"), body.get("options")
        if not isinstance(question, str) or not (
            isinstance(options, list) and len(options) == len(LETTERS) and all(isinstance(o, str) for o in options)
        ):
            raise ChatRequestError("`question` must be a string and `options` a list of four strings", "options")
        return question, options
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError(f"`messages` must be a non-empty list; {EXPECTED_LAYOUT}", "messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ChatRequestError(f"no user message; {EXPECTED_LAYOUT}", "messages")
    return read_question_text(_text_of(users[-1].get("content")))


def _schema_core(schema: Any) -> Any:
    """What decides a schema's meaning for the answer: types, properties, enums, bounds, required keys."""
    if isinstance(schema, dict):
        ignored = {"title", "description", "additionalProperties", "$schema", "strict", "examples", "default"}
        core = {k: _schema_core(v) for k, v in schema.items() if k not in ignored}
        if isinstance(core.get("required"), list):
            core["required"] = sorted(core["required"])
        return core
    if isinstance(schema, list):
        return [_schema_core(v) for v in schema]
    return schema


def _without_bounds(schema: dict) -> dict:
    properties = {
        k: {f: v for f, v in p.items() if f not in ("minimum", "maximum")} for k, p in schema["properties"].items()
    }
    return {**schema, "properties": properties}


def is_answer_schema(schema: Any) -> bool:
    """Whether a client's JSON schema asks for exactly the answer the service gives (the confidence's
    bounds may be left out: every answer is within them anyway, but other bounds are another schema)."""
    if not isinstance(schema, dict):
        return False
    ours = _schema_core(ANSWER_SCHEMA)
    return _schema_core(schema) in (ours, _without_bounds(ours))


def check_response_format(response_format: Any) -> None:
    """Absent, json_object, or an equivalent json_schema: fine. Anything else: a 400 naming the schema route."""
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "text"):
        return
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if is_answer_schema(schema):
            return
        raise ChatRequestError(
            "this service answers in one JSON schema only, and the requested one differs from it; "
            f"fetch it from GET {SCHEMA_ROUTE} (properties predicted_category A-D, confidence 0..1, reason)",
            "response_format",
        )
    raise ChatRequestError(
        f"response_format type {kind!r}: use json_schema (the answer schema, GET {SCHEMA_ROUTE}) or json_object",
        "response_format",
    )


@dataclass(frozen=True)
class ChatRequest:
    """What a chat request asks of the service, once read and checked."""

    model: str
    question: str
    options: list[str]
    max_tokens: int | None  # None: the service's own limit
    stream: bool
    include_usage: bool  # in a stream, a last chunk with the usage
    ignored: list[str]  # settings given that greedy decoding does not honour


def read_chat_request(body: Any, served_model: str) -> ChatRequest:
    """A chat-completions body, checked; a ``ChatRequestError`` names what is wrong."""
    if not isinstance(body, dict):
        raise ChatRequestError("the body must be a JSON object")
    model = body.get("model")
    if model != served_model:
        raise ChatRequestError(
            f"model {model!r} is not served here; this service serves {served_model!r} (GET /v1/models)",
            "model",
            status=404,
            code="model_not_found",
        )
    for key in ("tools", "functions", "tool_choice", "function_call"):
        if body.get(key):
            raise ChatRequestError(f"`{key}` is not supported: the service answers exam questions only", key)
    if body.get("n", 1) != 1:
        raise ChatRequestError("`n` must be 1: greedy decoding gives one answer", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise ChatRequestError(
            "log-probabilities are not returned; the answer carries medjson.letter_probability", "logprobs"
        )
    check_response_format(body.get("response_format"))
    limits = [body.get(k) for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    for limit in limits:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ChatRequestError(f"max_tokens {limit!r} must be a positive integer", "max_tokens")
    question, options = question_parts(body)
    stream_options = body.get("stream_options") or {}
    return ChatRequest(
        model=model,
        question=question,
        options=options,
        max_tokens=min(limits) if limits else None,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
        ignored=[k for k in IGNORED_SETTINGS if body.get(k) is not None],
    )


def answer_content(record: dict) -> str:
    """The message content: the answer JSON as the model stated it, or its raw output when it is no answer."""
    if not record["valid"]:
        return record["meta"].get("raw_output") or ""
    return json.dumps(
        {
            "predicted_category": record["predicted_category"],
            "confidence": record["meta"]["stated_confidence"],
            "reason": record["reason"],
        },
        ensure_ascii=False,
    )


def extension(record: dict, ignored: list[str], capped_max_tokens: int | None) -> dict:
    """The service's own fields beside OpenAI's: calibrated confidence and the abstention verdict."""
    meta = record["meta"]
    return {
        "valid": record["valid"],
        "confidence": record["confidence"],  # calibrated where an abstention file is loaded
        "confidence_source": meta["confidence_source"],
        "letter_probability": meta["letter_probability"],
        "abstained": meta["abstained"],
        "abstention_threshold": meta["abstention_threshold"],
        "decoding": meta["decoding"],
        "latency_ms": meta["latency_ms"],
        "ignored": ignored,
        **({"max_tokens_capped_at": capped_max_tokens} if capped_max_tokens is not None else {}),
    }


@dataclass(frozen=True)
class Completion:
    """One answer as OpenAI's client reads it."""

    content: str
    finish_reason: str  # stop, or length: cut at max_tokens or at the service's limit
    prompt_tokens: int
    completion_tokens: int
    medjson: dict

    def usage(self) -> dict:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


def completion_object(completion: Completion, model: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.content, "refusal": None},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": completion.usage(),
        "medjson": completion.medjson,
    }


def stream_events(completion: Completion, model: str, include_usage: bool) -> list[str]:
    """Server-sent events a streaming client reads: the role, the whole answer as one chunk, the end."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict, finish: str | None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**base, 'choices': [choice], **extra}, ensure_ascii=False)}\n\n"

    events = [
        chunk({"role": "assistant", "content": ""}, None),
        chunk({"content": completion.content}, None),
        chunk({}, completion.finish_reason, medjson=completion.medjson),
    ]
    if include_usage:
        events.append(f"data: {json.dumps({**base, 'choices': [], 'usage': completion.usage()})}\n\n")
    return [*events, "data: [DONE]\n\n"]
