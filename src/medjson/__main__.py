"""`medjson <command>`: the commands a user runs outside the DVC pipeline (``src/medjson/commands/``).

medjson serve [--model ...]          # the HTTP service
medjson predict --input ...          # answers for a file of questions
medjson publish --model ...          # a merged model, its card and abstention file to the hub
medjson demo [--config ...]          # the whole pipeline in a workspace of its own (offline)
medjson seeds --setting NAME=RUN,..  # a setting's DVC experiments, one per seed, read together
medjson hf-job --repo ...            # `dvc repro` on a Hugging Face Jobs GPU

Each is also ``python -m medjson.commands.<name>``; the stages dvc.yaml runs are in ``medjson.stages``.
"""

from __future__ import annotations

import importlib
import sys

from medjson.cli import run_stage

COMMANDS = {
    "serve": "medjson.commands.serve",
    "predict": "medjson.commands.predict",
    "publish": "medjson.commands.publish",
    "demo": "medjson.commands.demo",
    "seeds": "medjson.commands.seeds.__main__",
    "hf-job": "medjson.commands.hf_job",
    "tiny-model": "medjson.commands.tiny_model",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: medjson {{{','.join(COMMANDS)}}} [options]   (medjson <command> --help for each)")
    command_main = importlib.import_module(COMMANDS[sys.argv[1]]).main
    argv = sys.argv[2:]
    sys.argv[0] = f"medjson {sys.argv[1]}"  # each command's --help and usage name it so
    run_stage(lambda: command_main(argv))


if __name__ == "__main__":
    main()
