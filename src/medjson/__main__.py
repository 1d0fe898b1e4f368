"""`medjson <command>`: the commands a user runs outside the DVC pipeline.

medjson serve [--model ...]     # the HTTP service (python -m medjson.serve)
medjson predict --input ...     # answers for a file of questions (python -m medjson.predict)
medjson publish --model ...     # a merged model, its card and abstention file to the hub (python -m medjson.publish)
"""

from __future__ import annotations

import sys

from medjson.cli import run_stage

COMMANDS = ("serve", "predict", "publish")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: medjson {{{','.join(COMMANDS)}}} [options]   (medjson <command> --help for each)")
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "serve":
        from medjson.serve import main as command_main
    elif command == "publish":
        from medjson.publish import main as command_main
    else:
        from medjson.predict import main as command_main
    run_stage(lambda: command_main(argv))


if __name__ == "__main__":
    main()
