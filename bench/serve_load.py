"""Load test of `medjson serve`: M concurrent clients x K requests, dynamic batching against one at a time.

Starts the real service on a free 127.0.0.1 port twice, with the same model and settings
except the batch size (``--batch-size`` against 1), sends the same bounded load to each
and prints throughput, p50/p95 latency, errors and lost requests (which must be 0).

    python bench/serve_load.py --model demo-run/models/sft_merged --clients 16 --requests 4
    python bench/serve_load.py --model demo-run/models/sft_merged --hostile   # the hostile mix (serve_hostile.py)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from common import ROOT, conversations, report
from helpers import wait_until_ready


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    model: str, batch_size: int, wait_ms: float, decoding: str, folder: Path, request_timeout_s: float = 600
) -> tuple:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    port = _free_port()
    params["serve"].update(
        model=model,
        port=port,
        max_batch_size=batch_size,
        max_wait_ms=wait_ms,
        decoding=decoding,
        request_timeout_s=request_timeout_s,
        abstention=None,
    )
    path = folder / f"params-{batch_size}.yaml"
    path.write_text(yaml.safe_dump(params))
    log = (folder / f"serve-{batch_size}.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "medjson.serve", "--params", str(path)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, timeout_s=300)
    except RuntimeError as err:
        raise SystemExit(f"{err}; see {log.name}") from None
    return process, url


async def load(url: str, questions: list[dict], clients: int, requests: int, timeout_s: float) -> dict:
    latencies, errors, lost = [], 0, 0

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors, lost
        for k in range(requests):
            question = questions[(index * requests + k) % len(questions)]
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/answer", json=question)
            except httpx.HTTPError:
                lost += 1
                continue
            if response.status_code != 200 or not response.json().get("valid", False):
                errors += 1
            else:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "answered": len(latencies),
        "errors": errors,
        "lost": lost,
        "seconds": wall,
        "answers_per_s": len(latencies) / wall,
        "p50_s": statistics.median(ordered) if ordered else float("nan"),
        "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else float("nan"),
    }


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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch_size in (("one at a time", 1), ("dynamic batching", args.batch_size)):
            process, url = start_service(args.model, batch_size, args.wait_ms, args.decoding, Path(tmp))
            try:
                asyncio.run(load(url, questions[:1], 1, 1, args.timeout_s))  # warm-up
                result = asyncio.run(load(url, questions, args.clients, args.requests, args.timeout_s))
            finally:
                process.terminate()
                process.wait(timeout=60)
            rows.append({"mode": name, "max_batch_size": batch_size, "clients": args.clients, **result})
    rows[1]["speedup"] = rows[1]["answers_per_s"] / rows[0]["answers_per_s"]
    rows[0]["speedup"] = 1.0
    report(f"serve load: {args.clients} clients x {args.requests} requests, {args.decoding} decoding", rows, args.out)


def run_hostile(args, questions: list[dict]) -> None:
    from serve_hostile import hostile, long_question
    from transformers import AutoTokenizer

    settings = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    settings["request_timeout_s"] = 60
    at_limit = long_question(AutoTokenizer.from_pretrained(args.model), questions[0], settings["max_prompt_tokens"])
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_service(
            args.model, args.batch_size, args.wait_ms, args.decoding, Path(tmp), settings["request_timeout_s"]
        )
        try:
            asyncio.run(load(url, questions[:1], 1, 1, args.timeout_s))  # warm-up
            rows = asyncio.run(hostile(url, questions, at_limit, settings))
        finally:
            process.terminate()
            process.wait(timeout=60)
    title = (
        f"serve under a hostile mix: {len(rows)} clients at once, request_timeout_s {settings['request_timeout_s']}, "
        f"prompt at the limit {at_limit['tokens']} of {settings['max_prompt_tokens']} tokens"
    )
    report(title, rows, args.out.with_name("serve_hostile.json"))
    if not all(row["ok"] for row in rows):
        raise SystemExit("a client did not get what it should: see the rows marked False")


if __name__ == "__main__":
    main()
