"""`medjson seeds`: the command line (the package's docstring says what it does)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medjson.cli import run_stage
from medjson.commands.seeds import __doc__ as DESCRIPTION
from medjson.commands.seeds.report import collect
from medjson.errors import StageError


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, sep, runs = text.partition("=")
    names = [r.strip() for r in runs.split(",") if r.strip()]
    if not sep or not name.strip() or not names:
        raise StageError(f"--setting {text!r}: write NAME=RUN,RUN,... (experiment names or git revisions)")
    return name.strip(), names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=Path("."), help="the DVC workspace (a git repository)")
    parser.add_argument(
        "--setting", action="append", required=True, type=str, help="NAME=RUN,RUN,...: one setting's runs, by seed"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the folder written: seeds.json, seeds.md, heldout_curves.png"
    )
    args = parser.parse_args(argv)
    settings = dict(parse_setting(text) for text in args.setting)
    if len(settings) != len(args.setting):
        raise StageError("two --setting flags share one name: give each setting a name of its own")
    collect(args.workspace.resolve(), settings, args.out)
    print((args.out / "seeds.md").read_text())


if __name__ == "__main__":
    run_stage(main)
