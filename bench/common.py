"""What the benchmark scripts share: models to time, questions to ask, and how results are reported."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runnable from a bare checkout (the GPU machine has no install)

from medjson.workspace import PROJECT_QUESTIONS as QUESTIONS  # noqa: E402 - found through the path set above


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def conversations(n: int) -> list[list[dict]]:
    """n chat prompts from the project's own questions (repeated if n > 200)."""
    from medjson.core.prompts import build_messages
    from medjson.data.sources import LoadReport, read_local, validate_rows

    questions = validate_rows(read_local(QUESTIONS), "original", "error", True, LoadReport())
    return [build_messages(q.question, q.options) for q in (questions * (n // len(questions) + 1))[:n]]


TINY_DIR = ROOT / "bench" / "results" / "tiny"


def tiny_qwen3():
    """The tiny random Qwen3 of the tests (built once under bench/results), and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.commands.tiny_model import build_tiny_qwen3

    if not (TINY_DIR / "config.json").exists():
        build_tiny_qwen3(TINY_DIR)
    return AutoModelForCausalLM.from_pretrained(TINY_DIR), AutoTokenizer.from_pretrained(TINY_DIR)


# Qwen3-0.6B's configuration, for timings that need its shape but not its weights (no hub here).
QWEN3_06B_SHAPE = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000,
)


def random_qwen3_06b(dtype: torch.dtype):
    """Qwen3-0.6B's shape with random weights (no hub here), with the tiny model's tokenizer."""
    from medjson.commands.tiny_model import random_qwen3

    _, tokenizer = tiny_qwen3()
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = random_qwen3(tokenizer, QWEN3_06B_SHAPE).to(dtype)
    return model, tokenizer


def load(model_spec: str, precision: str):
    """A model for answering and its left-padded tokenizer (``precision``: auto or a precision name)."""
    from medjson.model.modeling import load_model, load_tokenizer, resolve_precision, resolve_source

    source = resolve_source(model_spec)
    return load_model(source, resolve_precision(precision)).eval(), load_tokenizer(source, padding_side="left")


def timed_generation(trainer) -> list[tuple[float, float]]:
    """From now on, every rollout generation of a TRL GRPO ``trainer`` as (start, seconds), the GPU
    synchronised before the clock stops."""
    calls: list[tuple[float, float]] = []
    original = trainer._generate

    def timed(*args, **kwargs):
        started = time.perf_counter()
        result = original(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        calls.append((started, time.perf_counter() - started))
        return result

    trainer._generate = timed
    return calls


def report(title: str, rows: list[dict], out: Path | None) -> None:
    """Print a table and write the rows as JSON."""
    print(f"\n{title} on {machine()}")
    keys = list(dict.fromkeys(k for r in rows for k in r))  # rows may differ (a skipped or failed one)
    widths = {k: max(len(k), *(len(_fmt(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(_fmt(r.get(k, "")).ljust(widths[k]) for k in keys))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"title": title, "machine": machine(), "rows": rows}, indent=2) + "\n")


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
