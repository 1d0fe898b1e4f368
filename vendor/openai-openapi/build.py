"""Pin the parts of OpenAI's published OpenAPI document that the service and its tests check against.

    python vendor/openai-openapi/build.py path/to/openai-openapi/openapi.json COMMIT

Reads ``openapi.json`` from a checkout of https://github.com/openai/openai-openapi and writes two
self-contained JSON Schema (2020-12) documents, each component's ``$ref`` closure under ``$defs``:

- ``src/medjson/serving/openai_request.schema.json``: ``CreateChatCompletionRequest``, which the
  service validates every chat-completions body against, so that it accepts what OpenAI accepts
  and refuses what it refuses;
- ``tests/openai_response.schemas.json``: the response, stream chunk, error, model and model-list
  objects the tests validate every reply against.

The document is OpenAPI 3.1 but still marks optional-null fields with 3.0's ``nullable: true``,
which JSON Schema ignores; each such schema's ``type`` (and ``enum``) gains ``null`` here, as
OpenAI's own servers accept. Descriptions are dropped (the schemas are checked, not read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUEST = "CreateChatCompletionRequest"
RESPONSES = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "Model",
    "ListModelsResponse",
)
PREFIX = "#/components/schemas/"


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(PREFIX):
                found.add(value[len(PREFIX) :])
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def closure(schemas: dict, names) -> list[str]:
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            found: set[str] = set()
            _refs(schemas[name], found)
            todo.extend(found)
    return sorted(seen)


def converted(node):
    """A JSON Schema node: local ``$defs`` references, ``nullable`` folded into ``type``, no prose."""
    if isinstance(node, list):
        return [converted(value) for value in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("description", "example", "examples", "x-oaiMeta", "title", "deprecated"):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = value.replace(PREFIX, "#/$defs/")
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: converted(schema) for name, schema in value.items()}  # property names are data
        else:
            out[key] = converted(value)
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if "$ref" in out or "allOf" in out or "anyOf" in out or "oneOf" in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def document(schemas: dict, names, source: str) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"pinned from {source} by vendor/openai-openapi/build.py",
        "$defs": {name: converted(schemas[name]) for name in closure(schemas, names)},
    }


def main(openapi_path: str, commit: str) -> None:
    schemas = json.loads(Path(openapi_path).read_text(encoding="utf-8"))["components"]["schemas"]
    source = f"https://github.com/openai/openai-openapi/blob/{commit}/openapi.json"
    targets = {
        ROOT / "src/medjson/serving/openai_request.schema.json": (REQUEST,),
        ROOT / "tests/openai_response.schemas.json": RESPONSES,
    }
    for path, names in targets.items():
        path.write_text(json.dumps(document(schemas, names, source), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{path.relative_to(ROOT)}: {', '.join(names)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
