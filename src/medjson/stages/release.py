"""Stage `release`: what a user downloads of a trained model, in one folder of tens of megabytes.

Runs once per trained model (``release@sft``, ``release@grpo``) and writes ``releases/<phase>/``:

- ``README.md``: the model card (``medjson.model.card``), Hugging Face's format;
- ``abstention.json``: the file calibrate fitted for the model under constrained decoding;
- ``adapters/<n>-<phase>/``: the LoRA adapters that make the model from its pretrained base, in
  training order (a GRPO model is its SFT adapter, then its own), with the tokenizer beside them;
- ``medjson_release.json``: the base (hub id or file, revision, digest), each adapter's digest,
  and the digest of the merged weights the pipeline evaluated.

``medjson predict --model releases/grpo`` (and ``serve``) rebuild the model from it bit for bit
(``medjson.model.release``); ``dvc artifacts get`` downloads it (dvc.yaml's ``artifacts``).

    python -m medjson.stages.release --phase grpo --out releases/grpo
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.core.choices import TRAINED_PHASES
from medjson.errors import StageError
from medjson.model.card import lineage, write_card
from medjson.model.release import RELEASE_FILE, adapter_digest
from medjson.params import load_params, log_params

log = logging.getLogger("medjson.release")

# The params.yaml keys this stage reads (dvc.yaml lists the same; ${item}: the phase's own section).
PARAMS_READ = ("card", "data.source", "model.enable_thinking", "benchmarks", "${item}")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "medjson_base.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def write_release(workspace: Path, params, phase: str, out: Path) -> Path:
    chain = lineage(workspace, phase)
    if out.exists():
        shutil.rmtree(out)  # this stage's own output, rewritten whole
    links = []
    for index, link in enumerate(chain):
        source = workspace / f"models/{link['phase']}_adapter"
        target = out / "adapters" / f"{index}-{link['phase']}"
        target.mkdir(parents=True)
        for name in ADAPTER_FILES:
            if not (source / name).is_file():
                raise StageError(f"{source / name} does not exist: re-run the {link['phase']} stage (dvc repro)")
            shutil.copy2(source / name, target / name)
        links.append(
            {"phase": link["phase"], "adapter": target.relative_to(out).as_posix(), "sha256": adapter_digest(target)}
        )
    last = workspace / f"models/{phase}_adapter"
    for name in TOKENIZER_FILES:
        if (last / name).is_file():
            shutil.copy2(last / name, out / name)
    abstention = workspace / f"calibration/{phase}_constrained/abstention.json"
    if not abstention.is_file():
        raise StageError(f"{abstention} does not exist: run `dvc repro calibrate@{phase}_constrained`")
    shutil.copy2(abstention, out / "abstention.json")
    # The merged weights' digest as calibrate recorded it (merge is not run again for it), and the dtype
    # merge stores them in, as the adapter's base record says.
    fitted = json.loads(abstention.read_text(encoding="utf-8"))
    record = {
        "phase": phase,
        "base": chain[0]["base"],
        "revision": chain[0].get("revision"),
        "base_sha256": chain[0]["weights_sha256"],
        "chain": links,
        "storage_dtype": chain[-1]["storage_dtype"],
        "weights_sha256": fitted["model_sha256"],
    }
    (out / RELEASE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_card(workspace, params, phase, out / "README.md")
    log.info("release of %s written to %s (%d adapters)", phase, out, len(links))
    return out


def main() -> None:
    parser = stage_parser(__doc__, "out")
    parser.add_argument("--phase", choices=TRAINED_PHASES, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    log_params(f"release {args.phase}", params.view("card", args.phase))
    write_release(Path.cwd(), params, args.phase, Path(args.out))


if __name__ == "__main__":
    run_stage(main)
