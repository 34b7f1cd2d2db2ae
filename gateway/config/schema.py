"""JSON Schema for config files, generated from the model (editors and CI use it).

`python -m gateway.config.schema` rewrites config/gateway.schema.json; a test fails
when the committed file differs from what the model generates, so the two cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.config.model import Config

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "gateway.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a gateway config file."""
    schema = Config.model_json_schema()
    schema["title"] = "Gateway configuration"
    # pydantic lists the name pattern under patternProperties; make other names errors.
    schema["properties"]["upstreams"]["additionalProperties"] = False
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render_schema() -> str:
    """The schema as written to disk: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_PATH.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")


if __name__ == "__main__":
    main()
