"""A hostile mix against `medjson serve`: do the small requests still get answered in time?

16 clients at once: 8 small questions; one at the prompt-token limit; one over it; a client that
stalls in its headers and one that stalls in its body; a NaN, a lone surrogate, a body over the
size limit and a 10 MB body. Every small request must be answered (200) within
``serve.request_timeout_s``, every hostile one must get its refusal (or its connection closed),
and nothing may be lost. Then the costly chat bodies: four at every ``serve`` chat bound at once
(messages, content parts, characters: the worst whose schema is checked) and one of 50,000
messages (refused by its count), while ``GET /health`` is asked every 20 ms: each health answer
must come within 0.1 s. Prints one row per kind of client.

    python bench/serve_load.py --model demo-run/models/sft_merged --hostile
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

SMALL_CLIENTS = 8
REFUSED = "413 or cut off"
JSON = {"content-type": "application/json"}


def long_question(tokenizer, base: dict, max_prompt_tokens: int, enable_thinking: bool = False) -> dict:
    """``base`` with its question grown, in a script of many tokens per character (so that the token
    limit binds before the character limit), to the longest whose prompt fits ``max_prompt_tokens``."""
    from medjson.core.prompts import build_messages, render_prompt

    def tokens(text: str) -> int:
        prompt = render_prompt(tokenizer, build_messages(text, base["options"]), enable_thinking)
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])

    text = base["question"]
    while tokens(text + "肝臓") <= max_prompt_tokens:
        text += "肝臓"
    return {**base, "id": "at-limit", "question": text, "tokens": tokens(text)}


async def _raw(url: str, data: bytes, wait_s: float) -> str:
    """A client that sends ``data`` and then nothing; what the server did about it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        received = await asyncio.wait_for(reader.read(), wait_s)
    except asyncio.TimeoutError:
        received = None
    writer.close()
    if received is None:
        return "still open"
    return received.split(b"\r\n", 1)[0].decode() if received else "closed, nothing sent"


HEALTH_WITHIN_S = 0.1
MESSAGE = "Question: Which nerve supplies the deltoid?\nA. Radial\nB. Axillary\nC. Ulnar\nD. Median"


def worst_allowed_chat(model: str, settings: dict) -> dict:
    """A chat body at every bound of ``serve`` at once: as many messages, content parts and characters as
    are checked against OpenAI's schema (one more of any is refused by its count)."""
    others = min(settings["max_chat_messages"], settings["max_content_parts"] + 1) - 1
    text = "x" * ((settings["max_chat_chars"] - len(MESSAGE)) // others)
    system = [{"role": "system", "content": [{"type": "text", "text": text}]} for _ in range(others)]
    return {"model": model, "messages": [*system, {"role": "user", "content": MESSAGE}]}


async def health_under_costly_bodies(url: str, model: str, settings: dict) -> list[dict]:
    """``GET /health`` every 20 ms while four worst allowed chat bodies and one of 50,000 messages are
    checked: the slowest health answer, and what each costly body got."""
    worst = worst_allowed_chat(model, settings)
    many = {"model": model, "messages": [{"role": "system", "content": "x"}] * 50_000 + worst["messages"][-1:]}
    # Encoded before the clock starts: the client's own JSON encoding would block the loop the prober runs on.
    worst, many = json.dumps(worst).encode(), json.dumps(many).encode()
    latencies, rows = [], []
    async with httpx.AsyncClient(timeout=120) as http:
        # One chat first, untimed: the route's first answer pays for warming up, as every route's does.
        await http.post(
            f"{url}/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": MESSAGE}]}
        )
        bodies = [("chat at every bound", "200", worst)] * 4 + [("chat of 50,000 messages", "400", many)]

        async def costly(kind: str, expected: str, body: bytes) -> None:
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/chat/completions", content=body, headers=JSON)
            got = str(response.status_code)
            seconds = time.perf_counter() - started
            rows.append({"client": kind, "expected": expected, "got": got, "seconds": seconds, "ok": got == expected})

        async def probe(until: asyncio.Task) -> None:
            while not until.done():
                started = time.perf_counter()
                await http.get(f"{url}/health")
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)

        work = asyncio.ensure_future(asyncio.gather(*(costly(*body) for body in bodies)))
        await asyncio.gather(work, probe(work))
    rows.append(
        {
            "client": f"GET /health meanwhile ({len(latencies)} asked)",
            "expected": f"each within {HEALTH_WITHIN_S} s",
            "got": f"slowest {max(latencies):.3f} s",
            "seconds": max(latencies),
            "ok": max(latencies) <= HEALTH_WITHIN_S,
        }
    )
    return rows


async def hostile(url: str, small: list[dict], at_limit: dict, settings: dict) -> list[dict]:
    timeout = settings["request_timeout_s"]
    wait = max(settings["header_timeout_s"], settings["body_timeout_s"]) + 5
    rows = []

    async def timed(kind: str, expected: str, call) -> None:
        started = time.perf_counter()
        try:
            got = await call()
        except httpx.HTTPError as err:
            got = f"lost ({type(err).__name__})"
        rows.append({"client": kind, "expected": expected, "got": got, "seconds": time.perf_counter() - started})

    async def post(http, body=None, content=None):
        response = await http.post(f"{url}/v1/answer", json=body, content=content, headers=JSON)
        return str(response.status_code)

    async with httpx.AsyncClient(timeout=timeout + 30) as http:
        over = {**small[0], "question": at_limit["question"] + "肝臓" * 200}
        calls = [timed("small", "200", lambda q=q: post(http, q)) for q in small[:SMALL_CLIENTS]]
        calls += [
            timed(
                "at the token limit", "200", lambda: post(http, {k: v for k, v in at_limit.items() if k != "tokens"})
            ),
            timed("over the token limit", "422", lambda: post(http, over)),
            timed(
                "NaN id",
                "422",
                lambda: post(http, content=b'{"id": NaN, "question": "q", "options": ["a","b","c","d"]}'),
            ),
            timed(
                "lone surrogate",
                "422",
                lambda: post(http, content=b'{"question": "\\ud800?", "options": ["a","b","c","d"]}'),
            ),
            # Refused from their Content-Length alone: the server answers and closes while the client is still
            # sending, so a client may see its upload cut off instead of the 413.
            timed("body over the limit", REFUSED, lambda: post(http, content=b"x" * (settings["max_body_bytes"] + 1))),
            timed("10 MB body", REFUSED, lambda: post(http, content=b"x" * 10_000_000)),
            timed("stalled headers", "closed, nothing sent", lambda: _raw(url, b"POST /v1/answer HTTP/1.1\r\n", wait)),
            timed(
                "stalled body",
                "HTTP/1.1 408 Request Timeout",
                lambda: _raw(
                    url,
                    b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
                    wait,
                ),
            ),
        ]
        await asyncio.gather(*calls)
    for row in rows:
        refused = row["expected"] == REFUSED and (row["got"] == "413" or row["got"].startswith("lost"))
        in_time = row["client"] != "small" or row["seconds"] <= timeout
        row["ok"] = (row["got"] == row["expected"] or refused) and in_time
    return rows
