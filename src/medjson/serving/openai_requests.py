"""Reading an OpenAI chat-completions request into the one question the service answers.

A body is first checked against OpenAI's own request schema (``CreateChatCompletionRequest``,
pinned from its published OpenAPI document in ``openai_request.schema.json``), so the service
accepts what OpenAI accepts and refuses what it refuses, each refusal a 400 naming the field.
Then what greedy decoding cannot honour is refused (``n`` > 1, tools, log-probabilities) or
reported (sampling settings: ``medjson.ignored``), never silently taken for done.

- The question: the last user message, in the project's own prompt layout (the question, then
  lines ``A) ...`` to ``D) ...`` as ``core/prompts.py`` writes them; ``A. ...`` also reads; a last
  line ``Answer:`` may follow), or
  the body's ``question`` and ``options`` (the openai client's ``extra_body``).
- ``response_format``: absent, ``text``, ``json_object``, or a ``json_schema`` that accepts the same
  answers (``medjson.serving.answer_schema``: ``$ref``/``$defs``, enum order, titles, descriptions,
  ``additionalProperties`` and ``strict`` do not matter). Any other schema is refused, naming the
  difference.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from medjson.core.prompts import LETTERS
from medjson.serving.answer_schema import difference
from medjson.serving.client_text import excerpt
from medjson.serving.errors import ApiError
from medjson.serving.protocol import ChatRequest

CHAT_ROUTE = "/v1/chat/completions"
SCHEMA_ROUTE = "/v1/schema"
REQUEST_SCHEMA = Path(__file__).with_name("openai_request.schema.json")

# Every field of OpenAI's chat request (``CreateChatCompletionRequest``) and what the service does with it,
# one rule for all (docs/use.md's table says the same): honoured; honoured at the one value that greedy,
# text-only decoding without tools gives, any other value refused with a 400 naming the field; or answered
# without and listed in the answer's ``medjson.ignored``.
HONOURED = ("model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "response_format")
NO_TOOLS = "the service answers exam questions only and calls no tools"
NO_LOGPROBS = "log-probabilities are not returned; the answer carries medjson.letter_probability"
ONLY_AT = {  # field -> (the values it is honoured at, why any other is refused)
    "n": (lambda v: v in (None, 1), "must be 1: greedy decoding gives one answer"),
    "tools": (lambda v: not v, f"is not supported: {NO_TOOLS}"),
    "functions": (lambda v: not v, f"is not supported: {NO_TOOLS}"),
    "tool_choice": (lambda v: v in (None, "none"), f"may only be `none`: {NO_TOOLS}"),
    "function_call": (lambda v: v in (None, "none"), f"may only be `none`: {NO_TOOLS}"),
    "logprobs": (lambda v: not v, f"must be false: {NO_LOGPROBS}"),
    "top_logprobs": (lambda v: not v, f"must be 0: {NO_LOGPROBS}"),
    "modalities": (lambda v: v in (None, ["text"]), 'may only be ["text"]: the service answers in text'),
    "audio": (lambda v: v is None, "is not supported: the service answers in text"),
    "web_search_options": (lambda v: v is None, "is not supported: the model answers without searching"),
}
IGNORED = (  # sampling (greedy decoding has none), storage, routing and caching hints, identifiers
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "logit_bias",
    "parallel_tool_calls",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "service_tier",
    "store",
    "metadata",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "moderation",
)
ROLES = ("system", "developer", "user", "assistant", "tool", "function")  # OpenAI's message roles

_OPTION_LINE = re.compile(r"^\s*([A-Da-d])\s*[.)]\s*(.*?)\s*$")
_QUESTION_PREFIX = re.compile(r"^\s*question\s*:\s*", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*answer\s*:?\s*$", re.IGNORECASE)
EXPECTED_LAYOUT = (
    "the last user message must hold the question, then four lines 'A. ...', 'B. ...', 'C. ...', 'D. ...' "
    "(or send `question` and `options` in the body)"
)


def refusal(message: str, param: str | None = None, status: int = 400, code: str | None = None) -> ApiError:
    return ApiError(status, message, param, code)


@functools.cache
def request_validator():
    """OpenAI's request schema, read once (the service reads it at start, so that no request pays for it)."""
    from jsonschema import Draft202012Validator

    document = json.loads(REQUEST_SCHEMA.read_text(encoding="utf-8"))
    return Draft202012Validator({**document, "$ref": "#/$defs/CreateChatCompletionRequest"})


def _param(path) -> str:
    """A JSON path as OpenAI's ``param`` writes it: ``messages[0].content``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _why(error) -> str:
    """What a schema error says, without echoing the value that was sent (an excerpt at most)."""
    kind, expected = error.validator, error.validator_value
    if kind == "required":
        return error.message.replace(repr(error.instance), "the object")[:200]
    if kind == "type":
        return f"must be of type {expected if isinstance(expected, str) else ' or '.join(expected)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": "at least", "maximum": "at most"}.get(kind, "beyond")
        return f"must be {bound} {expected} (got {excerpt(error.instance)})"
    if kind in ("minItems", "maxItems", "minLength", "maxLength"):
        return f"must have {'at least' if kind.startswith('min') else 'at most'} {expected} items or characters"
    if kind in ("enum", "const"):
        allowed = expected if isinstance(expected, list) else [expected]
        return f"must be one of {[v for v in allowed][:12]} (got {excerpt(error.instance)})"
    if kind in ("anyOf", "oneOf"):
        return "is not one of the forms OpenAI's API accepts here"
    return excerpt(error.message)


def check_openai_schema(body: Any) -> None:
    """A 400 naming the first field OpenAI's request schema refuses (the most specific one)."""
    from jsonschema.exceptions import best_match

    error = best_match(request_validator().iter_errors(body))
    if error is None:
        return
    path = list(error.absolute_path)
    # A message that matches none of OpenAI's message forms: its role is the usual reason.
    if len(path) == 2 and path[0] == "messages" and isinstance(error.instance, dict):
        role = error.instance.get("role")
        if role not in ROLES:
            raise refusal(
                f"{_param(path)}.role must be one of {list(ROLES)} (got {excerpt(role)})", f"{_param(path)}.role"
            )
    param = _param(path) or None
    raise refusal(f"{param}: {_why(error)}" if param else _why(error), param)


def check_chat_cost(body: Any, most_messages: int, most_parts: int, most_chars: int) -> None:
    """A 400 for a chat body over the service's bounds (``serve.max_chat_messages``, ``max_content_parts``,
    ``max_chat_chars``), found by counting alone: what checking a body against OpenAI's schema costs grows
    with its messages and parts, so a body that would cost more is refused before that work starts."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return  # the schema check names what is wrong
    if len(messages) > most_messages:
        raise refusal(f"messages: {len(messages)} messages, more than the {most_messages} served", "messages")
    contents = [m.get("content") for m in messages if isinstance(m, dict)]
    parts = [p for c in contents if isinstance(c, list) for p in c]
    if len(parts) > most_parts:
        raise refusal(f"messages: {len(parts)} content parts, more than the {most_parts} served", "messages")
    texts = [c for c in contents if isinstance(c, str)] + [
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    ]
    chars = sum(len(text) for text in texts)
    if chars > most_chars:
        raise refusal(f"messages: {chars} characters of text, more than the {most_chars} served", "messages")


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts) and parts:
            return "\n".join(parts)
    raise refusal(f"the last user message has no text content; {EXPECTED_LAYOUT}", "messages")


def read_question_text(text: str) -> tuple[str, list[str]]:
    """(question, options A-D) from a message in the project's prompt layout, or a 400 saying what was expected."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and _ANSWER_LINE.match(lines[-1]):
        lines = lines[:-1]
    if len(lines) < len(LETTERS) + 1:
        raise refusal(f"no question and four options could be read: {EXPECTED_LAYOUT}", "messages")
    option_lines = [_OPTION_LINE.match(line) for line in lines[-len(LETTERS) :]]
    letters = [m.group(1).upper() if m else None for m in option_lines]
    if letters != list(LETTERS):
        raise refusal(
            f"the message's last four lines are not the options A-D (read {letters}): {EXPECTED_LAYOUT}", "messages"
        )
    empty = [letter for letter, m in zip(LETTERS, option_lines) if not m.group(2)]
    if empty:
        raise refusal(f"option {' and '.join(empty)} has no text: {EXPECTED_LAYOUT}", "messages")
    question = _QUESTION_PREFIX.sub("", "\n".join(lines[: -len(LETTERS)])).strip()
    if not question:
        raise refusal(f"the message has options but no question: {EXPECTED_LAYOUT}", "messages")
    return question, [m.group(2) for m in option_lines]


def question_parts(body: dict) -> tuple[str, list[str]]:
    """The question and options a chat request asks: its own fields, or its last user message."""
    if "question" in body or "options" in body:
        question, options = body.get("question"), body.get("options")
        if not isinstance(question, str) or not (
            isinstance(options, list) and len(options) == len(LETTERS) and all(isinstance(o, str) for o in options)
        ):
            raise refusal("`question` must be a string and `options` a list of four strings", "options")
        return question, options
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise refusal(f"`messages` must be a non-empty list; {EXPECTED_LAYOUT}", "messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise refusal(f"no user message; {EXPECTED_LAYOUT}", "messages")
    return read_question_text(_text_of(users[-1].get("content")))


def check_response_format(response_format: Any) -> None:
    """Absent, text, json_object, or a json_schema that accepts the same answers: fine. Anything else:
    a 400 naming the difference and the schema route (the body's shape was checked against OpenAI's
    schema before)."""
    if response_format is None or response_format.get("type") in ("json_object", "text"):
        return
    differs = difference(response_format["json_schema"].get("schema"))
    if differs is None:
        return
    raise refusal(
        f"this service answers in one JSON schema only, and the requested one differs from it: {differs}; "
        f"fetch it from GET {SCHEMA_ROUTE} (properties predicted_category A-D, confidence 0..1, reason)",
        "response_format",
    )


def read_chat_request(body: Any, served_model: str) -> ChatRequest:
    """A chat-completions body, checked; an ``ApiError`` names what is wrong."""
    if not isinstance(body, dict):
        raise refusal("the body must be a JSON object")
    check_openai_schema(body)
    model = body["model"]
    if model != served_model:
        raise refusal(
            f"model {excerpt(model)!r} is not served here; this service serves {served_model!r} (GET /v1/models)",
            "model",
            status=404,
            code="model_not_found",
        )
    for field, (honoured, why) in ONLY_AT.items():
        if not honoured(body.get(field)):
            raise refusal(f"`{field}` {why}", field)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise refusal("`stream_options` is only allowed with `stream: true`", "stream_options")
    check_response_format(body.get("response_format"))
    limits = [body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    for limit in limits:
        if limit < 1:
            raise refusal(f"max_tokens {limit} must be a positive integer", "max_tokens")
    question, options = question_parts(body)
    stream_options = body.get("stream_options") or {}
    return ChatRequest(
        model=model,
        question=question,
        options=options,
        max_tokens=min(limits) if limits else None,
        stream=bool(body.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
        ignored=[k for k in IGNORED if body.get(k) is not None],
    )
