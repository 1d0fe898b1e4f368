"""One parser for rewards and metrics: table-driven, malformed outputs included."""

from __future__ import annotations

import pytest

from medjson.core.parsing import Answer, parse_answer, schema_errors
from medjson.core.scoring import prediction_record
from medjson.training.rewards import (
    REWARDS,
    calibration,
    completion_text,
    correct_answer,
    letter_balance,
    valid_json,
    valid_schema,
)

GOOD = '{"predicted_category": "B", "confidence": 0.8, "reason": "Because."}'

# text, valid_json, schema_valid, predicted, lenient_only
CASES = [
    (GOOD, True, True, "B", False),
    ("  " + GOOD + "\n", True, True, "B", False),
    ('{"predicted_category": "E", "confidence": 0.8, "reason": "x"}', True, False, None, False),
    ('{"predicted_category": "B", "confidence": 1.5, "reason": "x"}', True, False, None, False),
    ('{"predicted_category": "B", "confidence": true, "reason": "x"}', True, False, None, False),
    ('{"predicted_category": "B", "confidence": "0.8", "reason": "x"}', True, False, None, False),
    ('{"predicted_category": "B", "confidence": 0.8}', True, False, None, False),
    ('{"predicted_category": "B", "confidence": 0.8, "reason": "x", "extra": 1}', True, False, None, False),
    # Strict means strict: NaN and Infinity are not JSON, and a repeated key is not one answer.
    ('{"predicted_category": "B", "confidence": NaN, "reason": "x"}', False, False, None, False),
    ('{"predicted_category": "B", "confidence": Infinity, "reason": "x"}', False, False, None, False),
    (
        '{"predicted_category": "A", "confidence": 0.8, "reason": "x", "predicted_category": "B"}',
        False,
        False,
        None,
        False,
    ),
    (
        "The answer: " + '{"predicted_category": "A", "predicted_category": "B", "confidence": 0.8, "reason": "x"}',
        False,
        False,
        None,
        False,
    ),
    # A 5,000-digit number is JSON (Python alone refuses to convert it), and out of range.
    ('{"predicted_category": "B", "confidence": ' + "1" * 5000 + ', "reason": "x"}', True, False, None, False),
    # A lone surrogate escape, as a small model can write it: valid JSON, a valid answer.
    ('{"predicted_category": "B", "confidence": 0.8, "reason": "\\ud83d"}', True, True, "B", False),
    ('["B", 0.8]', False, False, None, False),
    ('{"predicted_category": "B", "confidence": 0.8, "reason": "cut off', False, False, None, False),
    ("", False, False, None, False),
    ("C) Folic acid", False, False, None, False),
    ("<think>\nhmm\n</think>\n\n" + GOOD, False, False, None, True),
    ("```json\n" + GOOD + "\n```", False, False, None, True),
    ("The answer is " + GOOD + " I hope.", False, False, None, True),
    ("{" * 5000, False, False, None, False),
    ("{" * 1_000_000, False, False, None, False),  # read in linear time: a megabyte of `{` takes milliseconds
    ('x {"a": ' * 100_000, False, False, None, False),
]


@pytest.mark.parametrize("text, is_json, is_schema, predicted, lenient_only", CASES)
def test_parse_answer(text, is_json, is_schema, predicted, lenient_only):
    parsed = parse_answer(text)
    assert parsed.valid_json == is_json
    assert parsed.schema_valid == is_schema
    assert parsed.predicted == predicted
    assert (parsed.lenient_schema_valid and not parsed.schema_valid) == lenient_only
    if lenient_only:
        assert parsed.lenient_predicted == "B"


def test_schema_errors_name_each_fault():
    errors = schema_errors({"predicted_category": "Z", "confidence": -1})
    assert any("missing ['reason']" in e for e in errors)
    assert any("'Z'" in e for e in errors)
    assert any("outside 0..1" in e for e in errors)


def _conv(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text, gold, expected",
    [
        # text, gold: valid_json, valid_schema, correct_answer, calibration
        (GOOD, "B", (1.0, 1.0, 1.0, 1 - 0.2**2)),
        (GOOD, "A", (1.0, 1.0, 0.0, 1 - 0.8**2)),
        ('{"predicted_category": "B", "confidence": 2, "reason": "x"}', "B", (1.0, 0.0, 0.0, 0.0)),
        ("<think></think>" + GOOD, "B", (0.0, 0.0, 0.0, 0.0)),
        ("garbage", "B", (0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_rewards_agree_with_the_parser(text, gold, expected):
    completions = [_conv(text)]
    got = (
        valid_json(completions),
        valid_schema(completions),
        correct_answer(completions, answer=[gold]),
        calibration(completions, answer=[gold]),
    )
    assert [g[0] for g in got] == pytest.approx(list(expected))
    record = prediction_record({"id": "q", "subject": "s", "answer": gold}, Answer.read(text, 10, None))
    assert record["correct"] == bool(expected[2]) and record["schema_valid"] == bool(expected[1])


def test_rewards_take_plain_and_conversational_completions():
    assert completion_text(_conv(GOOD)) == GOOD == completion_text(GOOD)
    assert completion_text(None) == ""
    for fn in REWARDS.values():
        assert fn([GOOD, _conv("x")], answer=["B", "B"])[1] == 0.0


def test_reward_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        correct_answer([_conv(GOOD)], answer=["A", "B"])


def test_nothing_non_finite_is_ever_written():
    from medjson.core.records import dumps_line
    from medjson.errors import DataError

    answer = Answer.read(GOOD, 10, (float("nan"), 0.2, 0.3, 0.5))
    assert answer.parsed.schema_valid and answer.letter_probs is None and answer.letter_probability is None
    with pytest.raises(DataError, match="JSON cannot hold"):
        dumps_line({"confidence": float("inf")})


def test_letter_balance_prices_the_batch_s_commonest_letter():
    def answer(letter):
        return _conv(f'{{"predicted_category": "{letter}", "confidence": 0.5, "reason": "r"}}')

    # 8 completions as one generation batch: 5 B, 2 A, 1 C, and one that is not JSON at all.
    batch = [answer(x) for x in "BBBBBAAC"] + [_conv("not json")]
    got = letter_balance(batch)
    assert got == pytest.approx([1 - 5 / 9] * 5 + [1 - 2 / 9] * 2 + [1 - 1 / 9] + [0.0])
    assert letter_balance([answer("B")] * 4) == [0.0] * 4  # one letter for everything earns nothing
    assert letter_balance([answer(x) for x in "ABCD"]) == [0.75] * 4  # four letters evenly: the most
