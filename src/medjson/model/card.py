"""A model card for the SFT or GRPO model, written from the pipeline's own records (``medjson.stages.release``).

The card is Hugging Face's format, a
README.md whose YAML header the hub, its search and its leaderboards read: ``base_model``,
``datasets``, ``license``, ``tags``, ``pipeline_tag`` and a ``model-index`` with the evaluation
pool's and every benchmark's accuracy, log-likelihood accuracy and valid-JSON rate (the split and
n with each). Below it: the lineage (base and revision, the SFT model a GRPO model starts from,
each by digest), how to prompt it, the schema it answers, the calibration and abstention file it
ships with, the parameters that trained it, its limits, and how to call it. Every figure is
read from the metrics files, so the card and ``dvc metrics show`` never disagree.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from medjson.core.choices import TRAINED_PHASES
from medjson.core.parsing import ANSWER_SCHEMA
from medjson.core.prompts import SYSTEM_PROMPT, format_question
from medjson.errors import StageError

log = logging.getLogger("medjson.card")

TASK = {"type": "multiple-choice", "name": "Medical multiple-choice questions answered as JSON"}
# The model-index metrics: (metrics file key, its type on the hub, its name in the card).
FIGURES = (
    ("accuracy", "accuracy", "Accuracy"),
    ("loglik_accuracy", "accuracy", "Log-likelihood accuracy (lm-evaluation-harness, zero-shot)"),
    ("valid_json_rate", "valid_json_rate", "Valid JSON rate"),
)


def _read(path: Path) -> dict:
    if not path.is_file():
        raise StageError(f"{path} does not exist: run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def is_hub_id(spec: str) -> bool:
    """``org/name``, neither a path nor a file: what the hub's ``base_model`` can link to."""
    parts = spec.split("/")
    local = spec.startswith((".", "/")) or ":" in spec or Path(spec).exists()
    return len(parts) == 2 and all(parts) and not local


def lineage(workspace: Path, phase: str) -> list[dict]:
    """The chain of models this one stands on, from the pretrained base to this phase's adapter."""
    chain = []
    current = phase
    while True:
        record = _read(workspace / f"models/{current}_adapter/medjson_base.json")
        chain.insert(0, {"phase": current, **record})
        parent = record["base"]
        if (
            parent == f"models/{TRAINED_PHASES[TRAINED_PHASES.index(current) - 1]}_merged"
            and current != TRAINED_PHASES[0]
        ):
            current = TRAINED_PHASES[TRAINED_PHASES.index(current) - 1]
            continue
        return chain


def _result(metrics: dict, dataset: dict, suffix: str = "", keys=None) -> dict:
    figures = [
        {"type": kind, "value": round(float(metrics[key]), 4), "name": f"{name}{suffix}"}
        for key, kind, name in FIGURES
        if metrics.get(key) is not None and (keys is None or key in keys)
    ]
    return {"task": dict(TASK), "dataset": dataset, "metrics": figures}


def model_index(workspace: Path, phase: str, params, name: str) -> list[dict]:
    """Every evaluation of this model, as the hub's model-index reads it."""
    pool = {
        "name": "MedMCQA, the evaluation pool" if "medmcqa" in params.data.source.lower() else "the evaluation pool",
        "type": params.data.source if is_hub_id(params.data.source) else "medjson-eval-pool",
        "split": "validation" if is_hub_id(params.data.source) else "eval pool",
    }
    results = []
    # The log-likelihood accuracy is the decoding's to neither: it is given once, with free decoding.
    for decoding, suffix, keys in (
        ("", " (free decoding)", None),
        ("_constrained", " (constrained decoding)", ("accuracy", "valid_json_rate")),
    ):
        metrics = _read(workspace / f"metrics/{phase}{decoding}.json")
        results.append(_result(metrics, {**pool, "args": {"n": metrics["n"]}}, suffix, keys))
    for benchmark, settings in params.benchmarks.items():
        metrics = _read(workspace / f"metrics/benchmarks/{benchmark}/{phase}.json")
        dataset = {
            "name": benchmark,
            "type": settings.source if is_hub_id(settings.source) else benchmark,
            "split": settings.split or "test",
            "args": {"n": metrics["n"]},
        }
        results.append(_result(metrics, dataset))
    return [{"name": name, "results": results}]


def metadata(workspace: Path, phase: str, params, name: str, chain: list[dict]) -> dict:
    base = chain[0]["base"]
    meta = {
        "license": params.card.license,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["medjson", "medical", "multiple-choice", "json", "lora", "trl", phase],
        "datasets": list(params.card.datasets),
        "language": ["en"],
    }
    if is_hub_id(base):
        meta["base_model"] = base
    meta["model-index"] = model_index(workspace, phase, params, name)
    return meta


def _table(index: list[dict]) -> str:
    rows = ["| evaluated on | split | n | " + " | ".join(name for _, _, name in FIGURES) + " |"]
    rows.append("|---" * (3 + len(FIGURES)) + "|")
    for result in index[0]["results"]:
        values = {m["name"].split(" (")[0]: m["value"] for m in result["metrics"]}
        decoding = next((m["name"].split(" (")[1].rstrip(")") for m in result["metrics"] if " (" in m["name"]), "")
        where = result["dataset"]["name"] + (f", {decoding}" if decoding and "decoding" in decoding else "")
        cells = [str(values.get(n.split(" (")[0], "")) for _, _, n in FIGURES]
        rows.append(
            f"| {where} | {result['dataset']['split']} | {result['dataset']['args']['n']} | {' | '.join(cells)} |"
        )
    return "\n".join(rows)


def _link(link: dict, first: bool) -> str:
    revision = f" at revision `{link['revision']}`" if link.get("revision") else ""
    on = f"`{link['base']}`{revision}" if first else "the model above, merged"
    return f"**{link['phase'].upper()}** (LoRA) on {on}, whose weights have sha256 `{link['weights_sha256']}`"


def _source_name(source: str) -> str:
    """A hub id as it is; a local file by its name only (a path on the machine that trained says nothing)."""
    return source if is_hub_id(source) else Path(source).name


def body(workspace: Path, phase: str, params, name: str, chain: list[dict], index: list[dict]) -> str:
    """The card's text. Over 80 lines because it is one template: the card reads top to bottom here
    as it does on the hub, each section beside the values it states."""
    abstention = _read(workspace / f"calibration/{phase}_constrained/abstention.json")
    data = _read(workspace / "metrics/data.json")
    trained = params.view(phase)
    steps = "\n".join(f"{i + 1}. {_link(link, i == 0)}" for i, link in enumerate(chain))
    example = format_question(
        "Which nerve supplies the deltoid muscle?", ["Radial nerve", "Axillary nerve", "Ulnar nerve", "Median nerve"]
    )
    threshold = abstention["threshold"]
    cutoff = (
        "no threshold (none reached the target: every answer abstains)" if threshold is None else f"{threshold:.4f}"
    )
    return f"""# {name}

A small language model that answers medical multiple-choice questions (four options, A-D) with
one JSON object and nothing else, trained by the medjson pipeline:
{"supervised fine-tuning" if phase == "sft" else "supervised fine-tuning, then GRPO with rule-based rewards"}.

## Results

{_table(index)}

Free decoding is the model alone; constrained decoding masks every token to the answer's
grammar, so every answer is schema-valid. Log-likelihood accuracy is what the model knows
(lm-evaluation-harness's zero-shot figure), whatever it writes.

## Lineage

{steps}

Pools (disjoint, from `{_source_name(params.data.source)}`): {", ".join(f"{k} {v}" for k, v in data["rows"].items())}.

## How to prompt it

System prompt, as trained:

```text
{SYSTEM_PROMPT}
```

User turn (the chat template with `enable_thinking: {str(params.model.enable_thinking).lower()}`):

```text
{example}
```

## What it answers

```json
{json.dumps(ANSWER_SCHEMA, indent=2)}
```

## Calibration and abstention

`abstention.json` ships with it (fitted on {abstention["calibration_n"]} calibration questions,
constrained decoding): the answer's confidence is the {abstention["confidence"]} confidence at
temperature {abstention["temperature"]:.4g}; an answer below {cutoff}
is marked abstained (target accuracy {abstention["target_accuracy"]}). ECE on the calibration
pool: stated {abstention["calibration_ece"]["stated"]:.4f}, letter {abstention["calibration_ece"]["letter"]:.4f}.

## Training parameters

```yaml
{yaml.safe_dump(trained, sort_keys=False).rstrip()}
```

## Limits

Trained and evaluated on exam questions only; the figures above are on the pools named there,
not on clinical use. A 4-option answer at chance is 0.25: compare accuracy with it, and with the
log-likelihood accuracy, before reading knowledge into the format. Not medical advice.

## Use

This folder (a release from `dvc artifacts get`, or the published model) is what predict and
serve take; the abstention file in it is found and checked against the weights:

```console
$ make setup && source .venv/bin/activate      # in a clone of the medjson project
$ medjson predict --model {name} --input questions.jsonl --output answers.jsonl
$ medjson serve --model {name}      # OpenAI's chat completions at /v1/chat/completions
```

```python
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
reply = client.chat.completions.create(
    model="{name}",
    messages=[{{"role": "user", "content": {json.dumps(example)}}}],
    response_format={{"type": "json_object"}},
)
print(reply.choices[0].message.content)
```
"""


def write_card(workspace: Path, params, phase: str, out: Path) -> Path:
    name = f"{params.card.name}-{phase}"
    chain = lineage(workspace, phase)
    meta = metadata(workspace, phase, params, name, chain)
    header = yaml.safe_dump(meta, sort_keys=False)
    text = f"---\n{header}---\n\n{body(workspace, phase, params, name, chain, meta['model-index'])}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    log.info("model card for %s written to %s", phase, out)
    return out
