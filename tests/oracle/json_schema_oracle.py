#!/usr/bin/env python3
"""Reference JSON Schema validation (the jsonschema package) for lathe's structured output tests.

Usage:
  json_schema_oracle.py validate CASES.json  -> JSON list on stdout, one entry per case:
      {"ok": true} or {"ok": false, "error": "..."}
    CASES.json is a list of {"schema": {...}, "text": "..."}; "text" is the generated JSON text,
    parsed strictly (json.loads, no NaN/Infinity) and validated with the validator the schema's
    $schema names (Draft 2020-12 when absent).
"""
import json
import sys

import jsonschema


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def check(case):
    try:
        value = json.loads(case["text"], parse_constant=reject_constant)
    except ValueError as e:
        return {"ok": False, "error": f"not JSON: {e}"}
    schema = case["schema"]
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        return {"ok": False, "error": "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:3])}
    return {"ok": True}


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "validate":
        sys.exit(__doc__)
    with open(sys.argv[2], encoding="utf-8") as f:
        cases = json.load(f)
    json.dump([check(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
