"""The Hugging Face Jobs recipe: the exact command, the token as a secret and never its value."""

from __future__ import annotations

import shlex

import pytest

from medjson.commands.hf_job import main


def test_the_dry_run_prints_a_command_hf_jobs_reads_with_the_token_as_a_secret(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    main(
        [
            "--repo",
            "https://example.org/medjson.git",
            "--publish",
            "me/medjson-grpo",
            "--dvc-remote",
            "s3://b/m",
            "--dry-run",
        ]
    )
    argv = shlex.split(capsys.readouterr().out)
    assert argv[:3] == ["hf", "jobs", "run"] and argv[argv.index("--flavor") + 1] == "t4-small"
    assert argv[argv.index("--secrets") + 1] == "HF_TOKEN" and "hf_secret_value" not in " ".join(argv)
    script = argv[-1]
    for step in (
        "git clone",
        "make setup",
        ".venv/bin/dvc repro",
        "medjson publish",
        "--repo me/medjson-grpo",
        "dvc push",
    ):
        assert step in script


def test_a_job_without_a_destination_for_its_results_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--repo", "https://example.org/medjson.git", "--dry-run"])
    assert "where the results go" in capsys.readouterr().err


def test_huggingface_hubs_own_cli_accepts_the_command(capsys):
    import subprocess
    import sys
    from pathlib import Path

    main(["--repo", "https://example.org/medjson.git", "--publish", "me/medjson-grpo", "--dry-run"])
    argv = shlex.split(capsys.readouterr().out)
    hf = Path(sys.executable).with_name("hf")
    checked = subprocess.run([str(hf), *argv[1:3], "--dry-run", *argv[3:]], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "Job not submitted" in checked.stdout
    assert "t4-small" in checked.stdout and "HF_TOKEN" in checked.stdout
