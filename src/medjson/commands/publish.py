"""`medjson publish`: a merged model, its card and its abstention file, uploaded to a hub repository.

    medjson publish --model models/grpo_merged --card releases/grpo/README.md --repo you/medjson-grpo --dry-run
    HF_TOKEN=hf_... medjson publish --model models/grpo_merged --card releases/grpo/README.md --repo you/medjson-grpo

What goes up: the model folder as ``merge`` wrote it (weights, config, tokenizer, chat template,
``medjson_lineage.json``), the card as ``README.md`` and the abstention file fitted for the model
(``--abstention auto``: the one calibrate fitted for it under constrained decoding, found beside
it; ``none``: no file) as ``abstention.json``. The card is checked first with huggingface_hub's
own readers (its YAML header and ``model-index``), and so is the abstention file against the
weights. The repository is private unless ``--public``; the token comes from the environment
(``HF_TOKEN``, or ``huggingface-cli login``), never from the command line. The commit the upload
made is recorded in ``published/<owner>__<name>.json`` (in the working folder, for git), with
the weights' digest, so a published revision can be traced to the run that made it.
``--dry-run`` checks everything and lists what would be uploaded, offline, with no token.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from medjson.cli import run_stage
from medjson.core.abstention import Abstention
from medjson.core.choices import CONSTRAINED, FIND_ABSTENTION
from medjson.errors import DataError
from medjson.model.answering import find_abstention
from medjson.model.lineage import weights_digest
from medjson.model.modeling import resolve_source

log = logging.getLogger("medjson.publish")

CARD, ABSTENTION = "README.md", "abstention.json"
RECORDS = Path("published")


def check_card(path: Path) -> int:
    """The card's metadata and model-index as the hub reads them; the number of evaluation results."""
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    if not path.is_file():
        raise DataError(f"--card {path} does not exist: run `dvc repro release` to write it")
    card, metadata = ModelCard.load(path), metadata_load(path) or {}
    if not card.data.license or not metadata.get("model-index"):
        raise DataError(f"--card {path} has no license or no model-index: write it with `dvc repro release`")
    _, results = model_index_to_eval_results(metadata["model-index"])
    return len(results)


def abstention_for(model: str, setting: str) -> Abstention | None:
    """The abstention file that goes with the model: found beside it, named, or none."""
    if setting.lower() == "none":
        return None
    source = resolve_source(model)
    if setting == FIND_ABSTENTION:
        found = find_abstention(model, source, CONSTRAINED)
        if found is None:
            raise DataError(
                f"no abstention file fitted for {model} (constrained decoding) beside it: run `dvc repro calibrate`, "
                "name one with --abstention, or publish without one (--abstention none)"
            )
        return found
    abstention = Abstention.read(setting)
    abstention.check_fits(model, weights_digest(source), abstention.decoding)
    return abstention


def staged_files(model: Path, card: Path, abstention: Abstention | None) -> dict[str, Path]:
    """What the repository receives: its path there -> the file here."""
    files = {p.relative_to(model).as_posix(): p for p in sorted(model.rglob("*")) if p.is_file()}
    if CARD in files:
        raise DataError(f"{model} holds a {CARD} of its own; the card replaces it: remove it first")
    files[CARD] = card
    if abstention is not None:
        files[ABSTENTION] = abstention.path
    return files


def upload(files: dict[str, Path], repo: str, private: bool, revision: str | None, message: str):
    """Create the repository (private unless asked) and upload the files in one commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_token

    if not get_token():
        raise DataError("no hub token: set HF_TOKEN (a write token) or run `huggingface-cli login`")
    api = HfApi()
    api.create_repo(repo, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        for name, path in files.items():
            target = Path(staging) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)  # no copy of the weights where the file system allows
            except OSError:
                shutil.copy2(path, target)
        return api.upload_folder(repo_id=repo, folder_path=staging, revision=revision, commit_message=message)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a merged model folder (models/<phase>_merged)")
    parser.add_argument("--card", required=True, type=Path, help="its card (releases/<phase>/README.md)")
    parser.add_argument("--repo", required=True, help="the hub repository, owner/name")
    parser.add_argument("--abstention", default=FIND_ABSTENTION, help="auto (default), a file, or none")
    parser.add_argument("--public", action="store_true", help="a public repository (default: private)")
    parser.add_argument("--revision", help="the branch to commit to (default: the repository's main)")
    parser.add_argument("--dry-run", action="store_true", help="check and list what would be uploaded, offline")
    args = parser.parse_args(argv)

    model = Path(args.model)
    if not (model / "config.json").is_file():
        raise DataError(f"--model {model} is no model folder (no config.json): run `dvc repro merge` to build it")
    results = check_card(args.card)
    abstention = abstention_for(args.model, args.abstention)
    files = staged_files(model, args.card, abstention)
    sha256 = weights_digest(resolve_source(args.model))
    visibility = "public" if args.public else "private"
    total = sum(p.stat().st_size for p in files.values())
    log.info(
        "publish %s to %s (%s), card with %d evaluation results, weights sha256 %s",
        model,
        args.repo,
        visibility,
        results,
        sha256,
    )
    for name, path in files.items():
        print(f"{path.stat().st_size:>12,d}  {name}")
    print(f"{total:>12,d}  in {len(files)} files -> https://huggingface.co/{args.repo} ({visibility})")
    if args.dry_run:
        log.info("dry run: nothing uploaded")
        return
    commit = upload(files, args.repo, not args.public, args.revision, f"medjson: {model.name}, weights {sha256[:12]}")
    record = {
        "repo": args.repo,
        "revision": args.revision,
        "commit": commit.oid,
        "url": commit.commit_url,
        "private": not args.public,
        "model": str(model),
        "weights_sha256": sha256,
        "files": sorted(files),
    }
    path = RECORDS / f"{args.repo.replace('/', '__')}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("published %s as commit %s; recorded in %s", args.repo, commit.oid, path)


if __name__ == "__main__":
    run_stage(main)
