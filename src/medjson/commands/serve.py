"""`medjson serve`: an HTTP API that answers questions with schema-valid JSON.

    medjson serve --model models/grpo_merged          # or: python -m medjson.commands.serve
    curl -s localhost:8000/v1/answer -H 'content-type: application/json' \
        -d '{"question": "Which nerve supplies the deltoid?", "options": ["Radial", "Axillary", "Ulnar", "Median"]}'

Endpoints: ``POST /v1/answer`` (one question), ``POST /v1/answer/batch`` (up to
``serve.max_batch_items``), ``GET /health``, ``GET /v1/schema`` (the answer's JSON schema),
OpenAI's ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``
(``medjson.serving.openai_routes``: any OpenAI client, structured output and token-by-token
streaming included), ``GET /metrics`` (Prometheus), and the OpenAPI docs at ``/docs`` (served
locally: no CDN needed) and ``/openapi.json``. The application is built in
``medjson.serving.app``; this module reads its settings and starts it.
With API keys configured (``MEDJSON_API_KEYS`` or ``serve.api_keys_file``), every route but
``/health`` needs ``Authorization: Bearer <key>``.

Concurrent requests share the model through dynamic batching: the first waiting question
opens a batch, which takes whatever else arrives within ``serve.max_wait_ms``, up to
``serve.max_batch_size`` questions, and runs as one batched generation while the next batch
gathers. Requests are validated before they queue, lengths in characters and the prompt in
tokens, so a bad one gets a 422 naming its field (with at most a short excerpt of what was sent)
and never reaches, or fails, a batch. Every request ends within ``serve.request_timeout_s`` (a
504 otherwise), and a question whose request timed out, or whose client hung up, stops
generating at the next step, so it slows no one else. Slow clients hold nothing: request headers must arrive within
``serve.header_timeout_s`` and a body (at most ``serve.max_body_bytes``) within
``serve.body_timeout_s``. Settings come from the ``serve`` section of ``params.yaml``, and the
command line overrides them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import typing
from typing import Any

from medjson.cli import run_stage
from medjson.core.choices import JSON_LOG
from medjson.core.validation import build_section, choices_of, present_type
from medjson.errors import ParamsError
from medjson.model.answering import Answerer, abstention_setting, read_abstention
from medjson.params import ServeParams, load_params
from medjson.serving.app import service_app
from medjson.serving.auth import is_loopback, load_api_keys
from medjson.serving.http import header_timeout_protocol
from medjson.serving.metrics import bare_access_lines

log = logging.getLogger("medjson.serve")


def warn_if_open(host: str, keys: list[str]) -> None:
    """A loud line when the service listens beyond this machine and anyone reaching it may use it."""
    if not keys and not is_loopback(host):
        log.warning(
            "serving on %s with no API key: anyone who can reach it can use it; set MEDJSON_API_KEYS or "
            "serve.api_keys_file",
            host,
        )


def _comma_list(text: str) -> list[str]:
    """A list setting on the command line: ``--allowed-hosts a.example,b.example``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def settings_from(argv: list[str] | None = None) -> tuple[ServeParams, Any, str]:
    """The serve section of the params file, with every key overridable by a flag of the same name;
    the parameters, and who named the abstention file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    hints = typing.get_type_hints(ServeParams)
    for f in dataclasses.fields(ServeParams):
        kind = present_type(hints[f.name])
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=_comma_list if typing.get_origin(kind) is list else kind if kind in (int, float) else str,
            choices=choices_of(ServeParams, f.name),
            help=f"overrides serve.{f.name}",
        )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    overrides = {key: value for key, value in vars(args).items() if key != "params" and value is not None}
    abstention, named_by = abstention_setting(overrides.pop("abstention", None), params.serve.abstention)
    settings = {**dataclasses.asdict(params.serve), **overrides, "abstention": abstention}
    # Command-line values get the same checks as params.yaml, and an error names the flag's source.
    return build_section(ServeParams, settings, "serve", "the command line"), params, named_by


def check_context(settings: ServeParams, answerer: Answerer) -> None:
    """The longest prompt allowed and the answer after it must fit the model's context."""
    context = answerer.context_tokens
    if context is not None and settings.max_prompt_tokens + settings.max_new_tokens > context:
        raise ParamsError(
            f"serve.max_prompt_tokens ({settings.max_prompt_tokens}) + serve.max_new_tokens "
            f"({settings.max_new_tokens}) is more than the {context} tokens {settings.model} can hold; "
            f"lower max_prompt_tokens to at most {context - settings.max_new_tokens}"
        )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    settings, params, named_by = settings_from(argv)
    abstention = read_abstention(settings.abstention, named_by)
    # A model that cannot load is a clear error before the port opens.
    answerer = Answerer(
        settings.model, params.model, settings.decoding, settings.max_new_tokens, None, abstention, settings.confidence
    )
    check_context(settings, answerer)
    answerer.warm_up(settings.max_batch_size)  # a compiled decoder compiles each batch size before the port opens
    keys = load_api_keys(settings.api_keys_file)
    warn_if_open(settings.host, keys)
    if settings.access_log == JSON_LOG:
        bare_access_lines()
    app = service_app(settings, answerer, keys)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,  # RequestMetrics writes the access log: every request, no query string values
        http=header_timeout_protocol(settings.header_timeout_s),
    )


if __name__ == "__main__":
    run_stage(main)
