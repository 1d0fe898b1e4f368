"""The project's error classes, under one base, so a stage's ``main`` can tell an expected failure
(bad data, bad parameters, a tripped guard) from a bug and end the former with one clear line."""

from __future__ import annotations


class MedjsonError(Exception):
    """An expected failure whose message says what was wrong, where, and what to do."""


class ParamsError(MedjsonError, ValueError):
    """The parameter file is missing a key, has an unknown one, or a value of the wrong type or range."""


class DataError(MedjsonError, ValueError):
    """A data source cannot be read, or holds a row that breaks the rules."""


class StageError(MedjsonError, RuntimeError):
    """A stage stopped on purpose: a guard tripped or an input is not what the stage needs."""
