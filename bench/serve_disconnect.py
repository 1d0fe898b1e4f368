"""The disconnect mix for ``bench/serve_load.py --disconnect``: clients that hang up cost nothing more.

The same questions twice on one service: first every client waits for its answer (the
reference), then, all at once again, half of them hang up shortly after sending. From the
service's token counter and the answers of those who stayed: the tokens the leavers' rows still
generated (against what their answers took in the reference), and whether the stayers' answers
are the reference's, token for token, and as fast.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time

import httpx


def tokens_generated(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == "medjson_generated_tokens_total")


def _hang_up(url: str, question: dict, after_s: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(question).encode()
    head = (
        "POST /v1/answer HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(head.encode() + body)
        time.sleep(after_s)


async def _round(url: str, questions: list[dict], leavers: set[int], after_s: float, timeout_s: float) -> dict:
    """Everyone asks at once; the leavers hang up after ``after_s``. The stayers' records and latencies."""
    answers, latencies = {}, {}

    async def stay(index: int, http: httpx.AsyncClient) -> None:
        asked = time.perf_counter()
        response = await http.post(f"{url}/v1/answer", json=questions[index])
        latencies[index] = time.perf_counter() - asked
        answers[index] = response.json() if response.status_code == 200 else None

    async with httpx.AsyncClient(timeout=timeout_s) as http:
        await asyncio.gather(
            *(
                asyncio.to_thread(_hang_up, url, questions[i], after_s) if i in leavers else stay(i, http)
                for i in range(len(questions))
            )
        )
    return {"answers": answers, "latencies": latencies}


def _same(a: dict | None, b: dict | None) -> bool:
    keys = ("predicted_category", "confidence", "reason")
    return a is not None and b is not None and all(a[k] == b[k] for k in keys)


def disconnect_mix(url: str, questions: list[dict], after_s: float, timeout_s: float) -> list[dict]:
    """The reference round and the mixed round; one row each."""
    everyone = set(range(len(questions)))
    leavers = set(range(0, len(questions), 2))
    before = tokens_generated(url)
    reference = asyncio.run(_round(url, questions, set(), after_s, timeout_s))
    middle = tokens_generated(url)
    mixed = asyncio.run(_round(url, questions, leavers, after_s, timeout_s))
    time.sleep(2.0)  # rows of leavers stop at the next step; let the batch end
    after = tokens_generated(url)
    full = {i: reference["answers"][i]["meta"]["new_tokens"] for i in everyone}
    stayers = sorted(everyone - leavers)
    stayer_tokens = sum(mixed["answers"][i]["meta"]["new_tokens"] for i in stayers if mixed["answers"][i])
    leaver_tokens = (after - middle) - stayer_tokens

    def latency(run: dict, who) -> dict:
        values = sorted(run["latencies"][i] for i in who)
        return {"p50_s": statistics.median(values), "max_s": values[-1]}

    return [
        {
            "round": "everyone waits",
            "clients": len(questions),
            "left": 0,
            "tokens": middle - before,
            "leavers_tokens": 0,
            "leavers_tokens_if_answered": sum(full[i] for i in leavers),
            "stayers_same_answer": f"{len(stayers)}/{len(stayers)}",
            **latency(reference, stayers),
        },
        {
            "round": f"half hang up after {after_s} s",
            "clients": len(questions),
            "left": len(leavers),
            "tokens": after - middle,
            "leavers_tokens": leaver_tokens,
            "leavers_tokens_if_answered": sum(full[i] for i in leavers),
            "stayers_same_answer": f"{sum(_same(mixed['answers'][i], reference['answers'][i]) for i in stayers)}"
            f"/{len(stayers)}",
            **latency(mixed, stayers),
        },
    ]
