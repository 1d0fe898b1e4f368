"""Pools: deterministic, disjoint by id and question text, and correct through `dvc repro prepare`."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from helpers import medmcqa_row, run_dvc, write_rows

from medjson.core.questions import ExamQuestion
from medjson.data.pools import (
    check_disjoint,
    clean_reason,
    fill_pools,
    group_by_question,
    normalize_question,
    pool_record,
)
from medjson.errors import DataError
from medjson.params import DataParams, PrepareParams
from medjson.stages.prepare import POOLS, make_pools
from medjson.workspace import create_workspace


def _prep(**changes) -> PrepareParams:
    base = dict(
        sft_size=10,
        grpo_size=5,
        calibration_size=3,
        heldout_size=2,
        eval_size=None,
        allow_short_pools=False,
        keep_multi=True,
        bad_rows="error",
        max_dropped_share=0.05,
        reason_max_chars=120,
        confidence_explained=0.85,
        confidence_unexplained=0.6,
    )
    return PrepareParams(**{**base, **changes})


def _question(qid: str, text: str) -> ExamQuestion:
    return ExamQuestion(qid, text, ["a", "b", "c", "d"], "A", "Anatomy", "single", "")


def _data(source) -> DataParams:
    return DataParams(source=str(source), layout="auto", revision=None, columns=None)


def test_same_question_text_never_crosses_pools(tmp_path):
    rows = [medmcqa_row(i, cop=(i % 4) + 1) for i in range(30)]
    # Five rows share one stem (spacing and case differ), under different ids.
    for i in range(5):
        rows[i]["question"] = ["Skeletal  muscles", "skeletal muscles?", "SKELETAL muscles"][i % 3]
    path = write_rows(tmp_path / "src.json", rows)
    for seed in range(20):
        pools, _, drops, _ = make_pools(_data(path), _prep(sft_size=8, grpo_size=6), seed)
        homes = {
            name for name, pool in pools.items() for q in pool if normalize_question(q.question) == "skeletal muscles"
        }
        assert len(homes) <= 1
        assert sum(len(p) for p in pools.values()) + drops["same_question_cut_at_pool_edge"] == 30


def test_fill_pools_cuts_an_overflowing_group_instead_of_splitting_it():
    groups = [[_question(f"g{g}-{i}", f"q{g}") for i in range(3)] for g in range(3)]
    pools, discarded = fill_pools(groups, {"sft": 4, "eval": None})
    assert [q.id for q in pools["sft"]] == ["g0-0", "g0-1", "g0-2", "g1-0"]
    assert [q.id for q in pools["eval"]] == ["g2-0", "g2-1", "g2-2"]
    assert discarded == 2


def test_check_disjoint_names_the_leak():
    pools = {"sft": [_question("x", "What is it?")], "eval": [_question("y", "what is it")]}
    with pytest.raises(DataError, match="'y'.*eval.*sft"):
        check_disjoint(pools)


def test_group_by_question_keeps_first_seen_order():
    qs = [_question("1", "b"), _question("2", "a"), _question("3", "B")]
    assert [[q.id for q in g] for g in group_by_question(qs)] == [["1", "3"], ["2"]]


def test_sft_target_is_schema_json_with_informative_confidence():
    explained = ExamQuestion("1", "Q?", ["w", "x", "y", "z"], "C", "Anatomy", "single", "Ans. c. Because y is right.")
    unexplained = ExamQuestion("2", "Q2?", ["w", "x", "y", "z"], "D", "Anatomy", "single", "")
    first, second = (json.loads(pool_record(q, 300, 0.85, 0.6)["target"]) for q in (explained, unexplained))
    assert first == {"predicted_category": "C", "confidence": 0.85, "reason": "Because y is right."}
    assert second == {"predicted_category": "D", "confidence": 0.6, "reason": "Option D is the best-supported answer."}


@pytest.mark.parametrize(
    "text, limit, expected",
    [
        ("Ans: b i.e. Liver  is\nbig", 100, "Liver is big"),
        ("Answer is A) The heart.", 100, "The heart."),
        ("First sentence here. Second sentence is much longer than the rest", 40, "First sentence here."),
        ("word " * 30, 22, "word word word word..."),
    ],
)
def test_clean_reason(text, limit, expected):
    assert clean_reason(text, limit) == expected


def _prepare_in(tmp_path, name, source, **prepare):
    folder = create_workspace(tmp_path / name, {"data": {"source": str(source)}, "prepare": prepare})
    run_dvc(folder, "repro", "prepare")
    return folder


@pytest.mark.slow
def test_dvc_prepare_on_project_questions_is_deterministic(tmp_path, questions_path):
    sizes = {"sft_size": 90, "grpo_size": 40, "calibration_size": 20, "heldout_size": 10}
    first = _prepare_in(tmp_path, "one", questions_path, **sizes)
    second = _prepare_in(tmp_path, "two", questions_path, **sizes)
    for pool in POOLS:
        assert (first / f"data/pools/{pool}.jsonl").read_bytes() == (second / f"data/pools/{pool}.jsonl").read_bytes()
    report = json.loads((first / "metrics/data.json").read_text())
    assert report["rows"] == {"sft": 90, "grpo": 40, "calibration": 20, "heldout": 10, "eval": 40}
    assert len(report["subjects"]["eval"]) >= 10
    other_seed = create_workspace(
        tmp_path / "three",
        {"data": {"source": str(questions_path)}, "seed": 7, "prepare": sizes},
    )
    run_dvc(other_seed, "repro", "prepare")
    assert (other_seed / "data/pools/eval.jsonl").read_bytes() != (first / "data/pools/eval.jsonl").read_bytes()


@pytest.mark.slow
def test_dvc_prepare_on_real_medmcqa_has_zero_leakage(tmp_path, medmcqa_dev):
    folder = _prepare_in(tmp_path, "real", medmcqa_dev)
    pools = {p: [json.loads(l) for l in (folder / f"data/pools/{p}.jsonl").open()] for p in POOLS}
    assert [len(pools[p]) for p in ("sft", "grpo", "calibration", "heldout")] == [1000, 500, 500, 64]
    texts = {
        p: {normalize_question(r["messages"][1]["content"].split("\n")[0]) for r in rows} for p, rows in pools.items()
    }
    ids = {p: {r["id"] for r in rows} for p, rows in pools.items()}
    for a, b in itertools.combinations(POOLS, 2):
        assert not ids[a] & ids[b] and not texts[a] & texts[b]
    total = sum(len(r) for r in pools.values())
    report = json.loads((folder / "metrics/data.json").read_text())
    assert total + sum(report["dropped"].values()) == 4183
    letters = Counter(r["answer"] for r in pools["eval"])
    assert report["eval_majority_accuracy"] == pytest.approx(max(letters.values()) / len(pools["eval"]), abs=1e-4)


@pytest.mark.slow
def test_dvc_prepare_fails_cleanly_on_a_bad_row(tmp_path):
    rows = [medmcqa_row(i, cop=(i % 4) + 1) for i in range(10)] + [medmcqa_row(50, cop=9)]
    source = write_rows(tmp_path / "bad.json", rows)
    folder = create_workspace(
        tmp_path / "ws",
        {
            "data": {"source": str(source)},
            "prepare": {"sft_size": 4, "grpo_size": 2, "calibration_size": 2, "heldout_size": 1},
        },
    )
    from medjson.workspace import dvc

    result = dvc(folder, "repro", "prepare", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "row-50" in output and "cop_out_of_range" in output and "Traceback" not in output


def test_hub_source_pools_train_for_training_and_validation_for_eval(monkeypatch):
    """The hub branch, with the hub replaced by in-memory splits (cop 0-based, as on the hub)."""
    import medjson.data.sources as sources

    validation = [medmcqa_row(i, cop=i % 4) for i in range(12)]
    train = [medmcqa_row(100 + i, cop=i % 4) for i in range(40)]
    train[0]["question"] = validation[3]["question"].upper()  # the same question under another id
    splits = {"validation": validation, "train": train}
    monkeypatch.setattr(
        sources,
        "read_hub",
        lambda dataset_id, split, revision, subset=None: [
            sources.RawRow(f"hub[{split}]#{i}", r) for i, r in enumerate(splits[split])
        ],
    )
    pools, _, drops, _ = make_pools(_data("org/medmcqa"), _prep(sft_size=10, grpo_size=5), seed=1)
    assert {q.id for q in pools["eval"]} == {r["id"] for r in validation}
    assert [q.answer for q in pools["eval"]][:4] == list("ABCD")  # hub layout: cop 0 is A
    training_ids = {q.id for q in pools["sft"] + pools["grpo"] + pools["calibration"] + pools["heldout"]}
    assert [len(pools[p]) for p in ("sft", "grpo", "calibration", "heldout")] == [10, 5, 3, 2]
    assert training_ids <= {r["id"] for r in train} and "row-100" not in training_ids
    assert drops["train_question_also_in_eval"] == 1


def test_data_report_reconciles_rows_read_with_pools_drops_and_rows_not_used(tmp_path):
    from medjson.stages.prepare import pool_sizes, pools_report

    rows = [medmcqa_row(i, cop=(i % 4) + 1) for i in range(40)] + [medmcqa_row(99, cop=7)]
    path = write_rows(tmp_path / "src.json", rows)
    prep = _prep(sft_size=10, grpo_size=5, eval_size=8, bad_rows="drop", max_dropped_share=0.1)
    pools, report, drops, not_used = make_pools(_data(path), prep, seed=3)
    summary = pools_report(pools, report, drops, not_used, pool_sizes(prep))
    assert summary["rows_read"] == 41 and summary["rows_not_used"] == 40 - 28
    assert summary["rows_read"] == sum(summary["rows"][p] for p in POOLS) + summary["rows_dropped"] + not_used
    assert summary["dropped"] == {"cop_out_of_range": 1} and summary["short_pools"] == {}


def test_a_short_pool_is_allowed_only_when_asked_and_then_reported(tmp_path):
    path = write_rows(tmp_path / "src.json", [medmcqa_row(i, cop=(i % 4) + 1) for i in range(12)])
    data = _data(path)
    with pytest.raises(DataError, match="pool `grpo` has 2 rows, fewer than the 5"):
        make_pools(data, _prep(sft_size=10, grpo_size=5), seed=0)
    with pytest.raises(DataError, match="pool `eval` is empty"):
        make_pools(data, _prep(sft_size=9, grpo_size=1, calibration_size=1, heldout_size=1), seed=0)
    short = _prep(sft_size=8, grpo_size=1, calibration_size=1, heldout_size=1, eval_size=5, allow_short_pools=True)
    pools, *_ = make_pools(data, short, seed=0)
    assert [len(pools[p]) for p in POOLS] == [8, 1, 1, 1, 1]
