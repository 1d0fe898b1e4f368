"""Whether a client's JSON schema asks for the answer the service gives: schemas compared by meaning.

Client libraries write the one answer schema in many ways: pydantic puts a ``str`` Enum in
``$defs`` behind a ``$ref`` (older versions wrap the reference in a one-item ``allOf``) and a
``Literal`` lists its letters in the order it was written; the openai client adds ``strict`` and
``additionalProperties: false``; titles, descriptions and defaults come and go. ``meaning`` keeps what
decides which answers a schema accepts, with local references resolved, enums and required keys as
sets and a ``const`` as a one-value enum, so schemas that accept the same answers compare equal;
``difference`` names the first place where a schema asks for something else. The confidence's bounds
may be left out (every answer is within them), and so may ``additionalProperties`` (no answer has other
keys).
"""

from __future__ import annotations

import json
from typing import Any

from medjson.core.parsing import ANSWER_SCHEMA

# Keys that describe a schema without changing what it accepts (for the answer: additionalProperties too).
ANNOTATIONS = frozenset(
    {"title", "description", "examples", "default", "$schema", "$id", "$comment", "strict", "deprecated"}
    | {"readOnly", "writeOnly", "additionalProperties", "$defs", "definitions"}
)
MAX_REFERENCES = 32  # a chain of references longer than this (or a loop) is no answer schema


class NotAnAnswerSchema(ValueError):
    """A schema that cannot be read as one (a reference that leads nowhere, or in a loop)."""


def _resolve(root: dict, reference: str) -> Any:
    if not reference.startswith("#/"):
        raise NotAnAnswerSchema(f"$ref {reference[:80]!r}: only references inside the schema (#/...) are read")
    node: Any = root
    for part in reference[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise NotAnAnswerSchema(f"$ref {reference[:80]!r} leads nowhere in the schema")
        node = node[part]
    return node


def meaning(schema: Any, root: Any = None, followed: int = 0) -> Any:
    """``schema`` reduced to what decides which JSON it accepts (``root``: the document its ``$ref``s point into)."""
    root = schema if root is None else root
    if isinstance(schema, list):
        return [meaning(item, root, followed) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        if followed >= MAX_REFERENCES:
            raise NotAnAnswerSchema(f"more than {MAX_REFERENCES} references in a row (a loop?)")
        target = _resolve(root, schema["$ref"])
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return meaning({**target, **siblings} if isinstance(target, dict) else target, root, followed + 1)
    kept = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
    if set(kept) == {"allOf"} and isinstance(kept["allOf"], list) and len(kept["allOf"]) == 1:
        return meaning(kept["allOf"][0], root, followed)
    out = {}
    for key, value in kept.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: meaning(item, root, followed) for name, item in value.items()}
        elif key in ("enum", "required") and isinstance(value, list):
            out[key] = _as_set(value)
        elif key == "const":
            out["enum"] = [value]
        elif key == "type" and isinstance(value, list) and len(value) == 1:
            out[key] = value[0]
        else:
            out[key] = meaning(value, root, followed)
    if "enum" in out and "type" not in out and all(isinstance(v, str) for v in out["enum"]):
        out["type"] = "string"  # an enum of strings accepts strings only, whether or not it says so
    return out


def _as_set(values: list) -> list:
    """A list whose order and repeats mean nothing (an enum, required keys), in one order."""
    unique = {json.dumps(value, sort_keys=True): value for value in values}
    return [unique[key] for key in sorted(unique)]


def _first_difference(theirs: Any, ours: Any, at: str) -> str | None:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in sorted(set(theirs) | set(ours)):
            where = f"{at}.{key}" if at else key
            if key not in ours:
                return f"{where} is not in the answer schema"
            if key not in theirs:
                return f"{where} is missing (the answer schema has {_shown(ours[key])})"
            found = _first_difference(theirs[key], ours[key], where)
            if found:
                return found
        return None
    if theirs != ours:
        return f"{at or 'the schema'} is {_shown(theirs)} where the answer schema has {_shown(ours)}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:80] + "..."


def _without_confidence_bounds(schema: dict) -> dict:
    confidence = {k: v for k, v in schema["properties"]["confidence"].items() if k not in ("minimum", "maximum")}
    return {**schema, "properties": {**schema["properties"], "confidence": confidence}}


OURS = meaning(ANSWER_SCHEMA)


def difference(schema: Any) -> str | None:
    """None where ``schema`` accepts the same answers as the service's; else what differs, first."""
    if not isinstance(schema, dict):
        return "the schema is not a JSON object"
    try:
        theirs = meaning(schema)
    except NotAnAnswerSchema as err:
        return str(err)
    if theirs in (OURS, _without_confidence_bounds(OURS)):
        return None
    return _first_difference(theirs, OURS, "")
