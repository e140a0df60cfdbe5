"""Read JSON and JSON-lines annotation files with one clear error when they are missing or malformed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tips_bench.data.base import require_path
from tips_bench.errors import DatasetError


def read_json(path: Path, what: str, how_to_fix: str) -> Any:
    """Parse a JSON file; raise :class:`DatasetError` naming ``path`` if it is missing or malformed."""
    require_path(path, what, how_to_fix)
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{what} at {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg});"
            f" {how_to_fix}"
        ) from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"cannot read {what} at {path} ({exc}); {how_to_fix}") from exc


def read_jsonlines(path: Path, what: str, how_to_fix: str) -> list[Any]:
    """Parse a JSON-lines file (one JSON value per non-blank line); errors name the file and line."""
    require_path(path, what, how_to_fix)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"cannot read {what} at {path} ({exc}); {how_to_fix}") from exc
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{what} at {path} has malformed JSON on line {number} ({exc.msg}); {how_to_fix}"
            ) from exc
    return records
