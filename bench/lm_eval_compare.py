"""lm-evaluation-harness itself against the pipeline's `loglik_accuracy`, on the same questions.

Runs the harness (PyPI `lm-eval`, installed by this script into the current environment with
every installed package held at its version) on a finished run's base model: one harness task
per pool, pointed at the run's own questions (the evaluation pool and each benchmark pool),
using the harness's own prompt code for `medmcqa`, `medqa_4options` and `mmlu`. Then it compares,
per pool: the harness's `acc` with the pipeline's `loglik_accuracy`, the share of questions on
which both pick the same letter, and the largest gap between their log-likelihoods.

    make demo && python bench/lm_eval_compare.py --run demo-run
    python bench/lm_eval_compare.py --run demo-run --model sft --out bench/results/lm_eval_sft.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, report

from medjson.core.prompts import LETTERS
from medjson.core.records import read_jsonl
from medjson.core.scoring import best_letter

LM_EVAL = "lm-eval==0.4.13"

# Each harness task as the harness defines it, with its documents in the fields its prompt code reads.
# "prompt_file": the harness's own module (under lm_eval/tasks/) holding doc_to_text, copied beside the task.
TASKS = {
    "medmcqa": {
        "prompt_file": "medmcqa/utils_medmcqa.py",
        "doc_to_text": "!function utils_medmcqa.doc_to_text",
        "doc_to_target": "cop",
        "doc": lambda q: {
            "id": q["id"],
            "question": q["question"],
            **dict(zip(("opa", "opb", "opc", "opd"), q["options"])),
            "cop": LETTERS.index(q["answer"]),
        },
    },
    "medqa_4options": {
        "prompt_file": "medqa/preprocess_medqa.py",
        "doc_to_text": "!function preprocess_medqa.doc_to_text",
        "doc_to_target": "label",
        "doc": lambda q: {
            "id": q["id"],
            "sent1": q["question"],
            **{f"ending{i}": option for i, option in enumerate(q["options"])},
            "label": LETTERS.index(q["answer"]),
        },
    },
    "mmlu": {
        "template": "mmlu/default/_default_template_yaml",  # doc_to_text read from the harness's file
        "description": "The following are multiple choice questions (with answers) about {{subject}}.\n\n",
        "doc_to_target": "answer",
        "doc": lambda q: {
            "id": q["id"],
            "question": q["question"],
            "choices": q["options"],
            "answer": LETTERS.index(q["answer"]),
            "subject": q["subject"].lower(),  # MMLU's subject names, as its per-subject descriptions write them
        },
    },
}


def ensure_lm_eval() -> Path:
    """The installed harness's folder; installed first if absent, without moving any installed package."""
    if importlib.util.find_spec("lm_eval") is None:
        frozen = subprocess.run(
            [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
        ).stdout
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
            constraints.write(frozen)
        print(f"installing {LM_EVAL} (every installed package held at its version)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", constraints.name, LM_EVAL], check=True)
    spec = importlib.util.find_spec("lm_eval")
    return Path(spec.origin).parent


def write_task(task_dir: Path, name: str, task: str, questions: list[dict], harness: Path) -> None:
    """A harness task over ``questions``: the named task's prompt, choices and metric, local documents."""
    import yaml

    spec = TASKS[task]
    docs = task_dir / f"{name}.jsonl"
    docs.write_text("".join(json.dumps(spec["doc"](q)) + "\n" for q in questions), encoding="utf-8")
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_choice": list(LETTERS),
        "doc_to_target": spec["doc_to_target"],
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    if "prompt_file" in spec:
        shutil.copy(harness / "tasks" / spec["prompt_file"], task_dir)
        config["doc_to_text"] = "@DOC_TO_TEXT@"
    else:
        template = yaml.safe_load((harness / "tasks" / spec["template"]).read_text())
        config["doc_to_text"] = template["doc_to_text"]
        config["description"] = spec["description"]
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    # `!function` is the harness's own YAML tag; safe_dump cannot write it.
    text = text.replace("'@DOC_TO_TEXT@'", spec.get("doc_to_text", ""))
    (task_dir / f"{name}.yaml").write_text(text, encoding="utf-8")


def harness_samples(out_dir: Path, name: str) -> dict[str, dict]:
    """The harness's logged samples of one task, by question id: its pick and its four log-likelihoods."""
    files = sorted(out_dir.rglob(f"samples_{name}_*.jsonl"))
    if not files:
        sys.exit(f"the harness wrote no samples for {name} under {out_dir}")
    samples = {}
    for sample in read_jsonl(files[-1]):
        logliks = [float(r[0]) for r in sample["filtered_resps"]]
        samples[sample["doc"]["id"]] = {"logliks": logliks, "predicted": best_letter(logliks), "acc": sample["acc"]}
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "demo-run", help="a workspace where `dvc repro` finished")
    parser.add_argument("--model", default="base", help="which evaluated model: base (model.base), sft or grpo")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lm_eval_compare.json")
    args = parser.parse_args()

    import yaml

    from medjson.model.modeling import resolve_source

    params = yaml.safe_load((args.run / "params.yaml").read_text())
    spec = params["model"]["base"] if args.model == "base" else str(args.run / "models" / f"{args.model}_merged")
    source = resolve_source(spec, params["model"].get("revision") if args.model == "base" else None)
    pools = {"eval_pool": ("medmcqa", args.run / "data" / "pools" / "eval.jsonl", args.run / "evaluation")}
    for bench in sorted(params.get("benchmarks", {})):
        task = json.loads((args.run / "metrics" / "benchmarks" / bench / "data.json").read_text())["harness_task"]
        pools[bench] = (task, args.run / "data" / "benchmark_pools" / f"{bench}.jsonl", args.run / "benchmarks" / bench)

    harness = ensure_lm_eval()
    with tempfile.TemporaryDirectory() as scratch:
        task_dir, out_dir = Path(scratch) / "tasks", Path(scratch) / "out"
        task_dir.mkdir()
        for name, (task, pool, _) in pools.items():
            write_task(task_dir, f"medjson_{name}", task, read_jsonl(pool), harness)
        model_args = f"pretrained={source.path},dtype=float32"
        if source.gguf_file:
            model_args += f",gguf_file={source.gguf_file}"
        command = [
            sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", model_args,
            "--tasks", ",".join(f"medjson_{name}" for name in pools), "--include_path", str(task_dir),
            "--batch_size", str(args.batch_size), "--device", "cpu", "--log_samples", "--output_path", str(out_dir),
        ]  # fmt: skip
        print(" ".join(command), flush=True)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run(command, check=True, env=env)
        rows = []
        for name, (task, pool, evaluations) in pools.items():
            theirs = harness_samples(out_dir, f"medjson_{name}")
            ours = {r["id"]: r for r in read_jsonl(evaluations / args.model / "loglik.jsonl")}
            if set(ours) != set(theirs):
                sys.exit(f"{name}: the harness scored other questions than {evaluations / args.model / 'loglik.jsonl'}")
            agree = sum(ours[i]["predicted"] == theirs[i]["predicted"] for i in ours)
            gap = max(
                abs(ours[i]["logliks"][letter] - theirs[i]["logliks"][k])
                for i in ours
                for k, letter in enumerate(LETTERS)
            )
            rows.append(
                {
                    "pool": name,
                    "task": task,
                    "n": len(ours),
                    "lm_eval_acc": sum(s["acc"] for s in theirs.values()) / len(theirs),
                    "loglik_accuracy": sum(r["correct"] for r in ours.values()) / len(ours),
                    "same_letter": agree / len(ours),
                    "max_loglik_gap": gap,
                }
            )
    report(
        f"lm-evaluation-harness {LM_EVAL.split('==')[1]} vs the pipeline, {args.model} model ({spec})", rows, args.out
    )


if __name__ == "__main__":
    main()
