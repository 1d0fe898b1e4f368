"""`medjson hf-job`: the whole pipeline on a Hugging Face Jobs GPU, as the reference notebook ran.

    medjson hf-job --repo https://github.com/you/medjson --publish you/medjson-grpo --dry-run
    medjson hf-job --repo https://github.com/you/medjson --dvc-remote s3://bucket/medjson

Builds the ``hf jobs run`` command (huggingface_hub's own CLI, installed with the project) that
clones the project at a revision, runs the README's set-up (``make setup``) and ``dvc repro``
on the chosen flavor (``t4-small`` by default: a T4, the GPU this project targets), then brings
the results back: ``--publish OWNER/NAME`` uploads the GRPO model with its card and abstention
file (``medjson publish``, private), ``--dvc-remote URL`` pushes the workspace's outputs to a
DVC remote you name (its credentials, like the hub token, as Jobs secrets). The token goes in as
a secret read from your environment (``--secrets HF_TOKEN``), never on the command line.
``--dry-run`` prints the exact command and submits nothing. Not run from the project's own
machines, which reach no hub.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

IMAGE = "python:3.11-bookworm"  # git and make included; pip brings torch's CUDA build on a GPU machine
FLAVORS = ("t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large", "a100-large")


def job_script(repo: str, revision: str, publish: str | None, dvc_remote: str | None) -> str:
    """The shell script the job runs: clone, set up, reproduce, bring the results back."""
    steps = [
        "set -euo pipefail",
        f"git clone {shlex.quote(repo)} medjson",
        "cd medjson",
        f"git checkout {shlex.quote(revision)}",
        "make setup",
        ".venv/bin/dvc repro",
        ".venv/bin/dvc metrics show",
    ]
    if publish:
        steps.append(
            ".venv/bin/medjson publish --model models/grpo_merged --card releases/grpo/README.md "
            f"--repo {shlex.quote(publish)}"
        )
    if dvc_remote:
        steps += [f".venv/bin/dvc remote add -d -f results {shlex.quote(dvc_remote)}", ".venv/bin/dvc push"]
    return " && ".join(steps)


def job_command(args) -> list[str]:
    secrets = ["--secrets", "HF_TOKEN"] + [part for name in args.secret for part in ("--secrets", name)]
    return [
        "hf",
        "jobs",
        "run",
        "--flavor",
        args.flavor,
        "--timeout",
        args.timeout,
        *secrets,
        IMAGE,
        "bash",
        "-c",
        job_script(args.repo, args.revision, args.publish, args.dvc_remote),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="the project's git URL (yours, with your params.yaml)")
    parser.add_argument("--revision", default="main", help="the commit or branch to run (default: %(default)s)")
    parser.add_argument(
        "--flavor", default="t4-small", choices=FLAVORS, help="the Jobs hardware (default: %(default)s)"
    )
    parser.add_argument("--timeout", default="4h", help="the job's limit (default: %(default)s)")
    parser.add_argument("--publish", metavar="OWNER/NAME", help="upload the GRPO model there (private)")
    parser.add_argument("--dvc-remote", metavar="URL", help="push every output to this DVC remote")
    parser.add_argument(
        "--secret", action="append", default=[], metavar="NAME", help="another secret from your environment"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command, submit nothing")
    args = parser.parse_args(argv)
    if not args.publish and not args.dvc_remote:
        parser.error("name where the results go: --publish OWNER/NAME and/or --dvc-remote URL")
    command = job_command(args)
    print(shlex.join(command))
    if not args.dry_run:
        sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    main()
