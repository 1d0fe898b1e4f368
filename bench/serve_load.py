"""Load test of `medjson serve`: M concurrent clients x K requests, dynamic batching against one at a time.

Starts the real service on a free 127.0.0.1 port twice, with the same model and settings
except the batch size (``--batch-size`` against 1), sends the same bounded load to each
and prints throughput, p50/p95 latency, errors and lost requests (which must be 0).

    python bench/serve_load.py --model demo-run/models/sft_merged --clients 16 --requests 4
    python bench/serve_load.py --model demo-run/models/sft_merged --hostile   # the hostile mix (serve_hostile.py)
    python bench/serve_load.py --model demo-run/models/sft_merged --routes    # OpenAI's route beside the own one
    python bench/serve_load.py --model demo-run/models/sft_merged --disconnect  # half the clients hang up
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from common import ROOT, conversations, report

from medjson.core.parsing import ANSWER_SCHEMA
from medjson.workspace.service import start_service


def start(model: str, folder: Path, name: str, **serve) -> tuple:
    """The real service with the project's serve settings (and ``serve`` overrides), its log in ``folder``."""
    settings = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    (folder / name).mkdir()
    return start_service(
        folder / name,
        model,
        log=folder / f"serve-{name}.log",
        ready_timeout_s=300,
        **{"max_new_tokens": settings["max_new_tokens"], "request_timeout_s": 600, **serve},
    )


@contextlib.contextmanager
def one_service(args, folder: Path, name: str, **serve):
    """The service with the bench's batch settings (and ``serve`` overrides), warmed up; stopped after."""
    process, url = start(
        args.model, folder, name, max_batch_size=args.batch_size, max_wait_ms=args.wait_ms, decoding=args.decoding,
        **serve,
    )  # fmt: skip
    try:
        asyncio.run(load(url, [WARM_UP], 1, 1, args.timeout_s))
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


WARM_UP = {
    "id": "warm-up",
    "question": "Which nerve supplies the deltoid?",
    "options": ["Radial", "Axillary", "Ulnar", "Median"],
}


ANSWER_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
}


async def ask(http: httpx.AsyncClient, url: str, route: str, question: dict, model: str) -> dict | None:
    """One question through ``route`` (answer: /v1/answer; chat: /v1/chat/completions); the answer's
    letter and reason, or None for a refused or invalid answer."""
    if route == "answer":
        response = await http.post(f"{url}/v1/answer", json=question)
        body = response.json() if response.status_code == 200 else {}
        return {"letter": body["predicted_category"], "reason": body["reason"]} if body.get("valid") else None
    lines = [f"Question: {question['question']}", *(f"{l}. {o}" for l, o in zip("ABCD", question["options"]))]
    request = {"model": model, "messages": [{"role": "user", "content": "\n".join(lines)}]}
    response = await http.post(f"{url}/v1/chat/completions", json={**request, "response_format": ANSWER_SCHEMA_FORMAT})
    if response.status_code != 200 or not response.json()["medjson"]["valid"]:
        return None
    answer = json.loads(response.json()["choices"][0]["message"]["content"])
    return {"letter": answer["predicted_category"], "reason": answer["reason"]}


async def load(
    url: str,
    questions: list[dict],
    clients: int,
    requests: int,
    timeout_s: float,
    routes: tuple[str, ...] = ("answer",),
    model: str = "",
) -> dict[str, dict]:
    """``clients`` concurrent clients per route, each asking ``requests`` questions in turn; the clients
    of the routes alternate, so every batch mixes them. Per route: answers, errors, lost requests, its
    own time to its last answer, throughput and latency, and each question's answer."""
    stats = {route: {"latencies": [], "errors": 0, "lost": 0, "answers": {}, "last": 0.0} for route in routes}
    started = time.perf_counter()

    async def client(index: int, route: str, http: httpx.AsyncClient) -> None:
        mine = stats[route]
        for k in range(requests):
            question = questions[(index * requests + k) % len(questions)]
            asked = time.perf_counter()
            try:
                answer = await ask(http, url, route, question, model)
            except httpx.HTTPError:
                mine["lost"] += 1
                continue
            if answer is None:
                mine["errors"] += 1
            else:
                mine["latencies"].append(time.perf_counter() - asked)
                mine["answers"][question["id"]] = answer
            mine["last"] = time.perf_counter() - started

    async with httpx.AsyncClient(timeout=timeout_s) as http:
        await asyncio.gather(*(client(i, route, http) for i in range(clients) for route in routes))
    results = {}
    for route, mine in stats.items():
        ordered = sorted(mine["latencies"])
        results[route] = {
            "answered": len(ordered),
            "errors": mine["errors"],
            "lost": mine["lost"],
            "seconds": mine["last"],
            "answers_per_s": len(ordered) / mine["last"] if mine["last"] else 0.0,
            "p50_s": statistics.median(ordered) if ordered else float("nan"),
            "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan"),
            "answers": mine["answers"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=20)
    parser.add_argument("--decoding", default="constrained")
    parser.add_argument("--timeout-s", type=float, default=600, help="per request")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve_load.json")
    parser.add_argument("--hostile", action="store_true", help="the hostile mix instead (bench/serve_hostile.py)")
    parser.add_argument("--routes", action="store_true", help="/v1/answer and /v1/chat/completions side by side")
    parser.add_argument("--disconnect", action="store_true", help="--clients at once, half hanging up after sending")
    parser.add_argument("--hang-up-s", type=float, default=1.0, help="with --disconnect: when the leavers hang up")
    args = parser.parse_args()

    questions = [
        {
            "id": str(i),
            "question": m[1]["content"].split("\n")[0].removeprefix("Question: "),
            "options": [line[3:] for line in m[1]["content"].split("\n")[1:5]],
        }
        for i, m in enumerate(conversations(args.clients * args.requests))
    ]
    if args.hostile:
        return run_hostile(args, questions)
    if args.routes:
        return run_routes(args, questions)
    if args.disconnect:
        return run_disconnect(args, questions)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch_size in (("one at a time", 1), ("dynamic batching", args.batch_size)):
            process, url = start(
                args.model, Path(tmp), f"batch-{batch_size}", max_batch_size=batch_size, max_wait_ms=args.wait_ms,
                decoding=args.decoding,
            )  # fmt: skip
            try:
                asyncio.run(load(url, questions[:1], 1, 1, args.timeout_s))  # warm-up
                result = asyncio.run(load(url, questions, args.clients, args.requests, args.timeout_s))["answer"]
            finally:
                process.terminate()
                process.wait(timeout=60)
            del result["answers"]
            rows.append({"mode": name, "max_batch_size": batch_size, "clients": args.clients, **result})
    rows[1]["speedup"] = rows[1]["answers_per_s"] / rows[0]["answers_per_s"]
    rows[0]["speedup"] = 1.0
    report(f"serve load: {args.clients} clients x {args.requests} requests, {args.decoding} decoding", rows, args.out)


def run_routes(args, questions: list[dict]) -> None:
    """/v1/answer and /v1/chat/completions at the same time, ``--clients`` each (alternating, so every batch
    mixes them), on one service: the same questions get the same answers, and the shared batcher gives
    both the same throughput."""
    with tempfile.TemporaryDirectory() as tmp, one_service(args, Path(tmp), "routes") as url:
        by_route = asyncio.run(
            load(url, questions, args.clients, args.requests, args.timeout_s, tuple(ROUTES), args.model)
        )
    results = [by_route[route] for route in ROUTES]
    answers = [r.pop("answers") for r in results]
    same = sum(answers[0][i] == answers[1].get(i) for i in answers[0])
    rows = [{"route": ROUTES[route], "clients": args.clients, **r} for route, r in zip(ROUTES, results)]
    ratio = rows[1]["answers_per_s"] / rows[0]["answers_per_s"]
    for row in rows:
        row["same_answers"] = f"{same}/{len(answers[0])}"
        row["throughput_vs_answer"] = row["answers_per_s"] / rows[0]["answers_per_s"]
    title = f"serve: /v1/answer and /v1/chat/completions at once, {args.clients} clients each x {args.requests}"
    report(title, rows, args.out.with_name("serve_routes.json"))
    if same != len(answers[0]) or abs(ratio - 1) > 0.10:
        raise SystemExit(f"the routes differ: {same}/{len(answers[0])} same answers, throughput ratio {ratio:.3f}")


ROUTES = {"answer": "/v1/answer", "chat": "/v1/chat/completions"}


def run_disconnect(args, questions: list[dict]) -> None:
    from serve_disconnect import disconnect_mix

    with tempfile.TemporaryDirectory() as tmp, one_service(args, Path(tmp), "disconnect") as url:
        rows = disconnect_mix(url, questions[: args.clients], args.hang_up_s, args.timeout_s)
    title = f"serve: {args.clients} clients at once, half hanging up {args.hang_up_s} s after sending"
    report(title, rows, args.out.with_name("serve_disconnect.json"))


def run_hostile(args, questions: list[dict]) -> None:
    from serve_hostile import health_under_costly_bodies, hostile, long_question
    from transformers import AutoTokenizer

    settings = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    settings["request_timeout_s"] = 60
    at_limit = long_question(AutoTokenizer.from_pretrained(args.model), questions[0], settings["max_prompt_tokens"])
    limit = settings["request_timeout_s"]
    with tempfile.TemporaryDirectory() as tmp, one_service(args, Path(tmp), "hostile", request_timeout_s=limit) as url:
        rows = asyncio.run(hostile(url, questions, at_limit, settings))
        rows += asyncio.run(health_under_costly_bodies(url, args.model, settings))
    title = (
        f"serve under a hostile mix: {len(rows)} clients at once, request_timeout_s {settings['request_timeout_s']}, "
        f"prompt at the limit {at_limit['tokens']} of {settings['max_prompt_tokens']} tokens"
    )
    report(title, rows, args.out.with_name("serve_hostile.json"))
    if not all(row["ok"] for row in rows):
        raise SystemExit("a client did not get what it should: see the rows marked False")


if __name__ == "__main__":
    main()
