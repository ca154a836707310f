"""Requests checked against the providers' published schemas, transcribed under tests/contracts/ (the source file,
its commit and any deviation are in each file's $comment): the stand-ins refuse what the real API would refuse, by name, so a test
that passes against them sends what the provider takes. Validated by jsonschema (JSON Schema 2020-12, the
dialect of OpenAPI 3.1)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

RUNPOD_V2 = json.loads((Path(__file__).parent / "contracts" / "runpod-v2.json").read_text())
VAST_V0 = json.loads((Path(__file__).parent / "contracts" / "vast-v0.json").read_text())


def runpod_problems(schema: str, value: Any) -> list[str]:
    """Why RunPod v2 would refuse `value` as its component `schema` (empty: it takes it)."""
    return _problems(RUNPOD_V2, schema, value)


def vast_problems(schema: str, value: Any) -> list[str]:
    """Why Vast's API v0 would refuse `value` as the request body `schema` names (RentRequest, OfferQuery,
    TemplateCreate, TemplateUpdate, InstanceUpdate)."""
    return _problems(VAST_V0, schema, value)


def _problems(document: dict, schema: str, value: Any) -> list[str]:
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": document["components"]})
    return [f"{'/'.join(map(str, error.absolute_path)) or '$'}: {error.message}"
            for error in validator.iter_errors(value)]


def runpod_query_problems(parameters: list[str], query: dict[str, list[str]]) -> list[str]:
    """Query parameters against the operation's published `parameters` (the names in components.parameters):
    unknown names, and values outside their enums or types."""
    specs = {RUNPOD_V2["components"]["parameters"][name]["name"]: RUNPOD_V2["components"]["parameters"][name]
             for name in parameters}
    problems = [f"unknown query parameter {name!r}" for name in query if name not in specs]
    for name, values in query.items():
        if name not in specs:
            continue
        schema = specs[name]["schema"]
        value: Any = values[0].split(",") if schema.get("type") == "array" else values[0]
        if schema.get("type") == "integer":
            value = int(value) if value.isdigit() else value
        problems += [f"{name}: {p}" for p in _check(schema, value)]
    return problems


def _check(schema: dict, value: Any) -> list[str]:
    validator = Draft202012Validator({**schema, "components": RUNPOD_V2["components"]})
    return [error.message for error in validator.iter_errors(value)]
