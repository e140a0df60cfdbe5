"""Find the declarative definitions in ``backbones/`` and ``tasks/``.

Definitions are data files shipped inside the wheel (``tips_bench/_defs/<kind>``) and read
from the repository root in a source checkout. Extra folders with the same layout can be
added with the ``TIPS_BENCH_PATH`` environment variable (``os.pathsep``-separated), which is
how other packages or a user's own definitions plug in.
"""

from __future__ import annotations

import difflib
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tips_bench.errors import TipsBenchError

_PACKAGE_ROOT = Path(__file__).resolve().parent


def definition_dirs(kind: str) -> list[Path]:
    """Folders holding ``<kind>/*.yaml`` definitions, built-in first."""
    dirs: list[Path] = []
    packaged = resources.files("tips_bench") / "_defs" / kind
    if packaged.is_dir():
        dirs.append(Path(str(packaged)))
    else:
        dirs.append(_PACKAGE_ROOT.parent / kind)
    for extra in filter(None, os.environ.get("TIPS_BENCH_PATH", "").split(os.pathsep)):
        dirs.append(Path(extra).expanduser() / kind)
    return [d for d in dirs if d.is_dir()]


@cache
def _load_all(kind: str, search_path: str) -> dict[str, dict[str, Any]]:
    del search_path  # part of the cache key only
    found: dict[str, dict[str, Any]] = {}
    for folder in definition_dirs(kind):
        for path in sorted(folder.glob("*.yaml")):
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise TipsBenchError(f"definition {path} is not valid YAML ({exc}); fix or remove it") from exc
            if not isinstance(data, dict) or "name" not in data:
                raise TipsBenchError(f"definition {path} has no 'name' field; every definition needs one")
            data["_path"] = str(path)
            found[data["name"]] = data
    return found


def load_definitions(kind: str) -> dict[str, dict[str, Any]]:
    """All definitions of a kind (``backbones`` or ``tasks``), by name; later folders override."""
    return dict(_load_all(kind, os.environ.get("TIPS_BENCH_PATH", "")))


def get_definition(kind: str, name: str) -> dict[str, Any]:
    """One definition by name, or an error that suggests the closest names."""
    defs = load_definitions(kind)
    if name in defs:
        return defs[name]
    close = difflib.get_close_matches(name, list(defs), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"run 'tips-bench {kind}' to list them"
    raise TipsBenchError(f"unknown {kind[:-1]} '{name}'; {hint}")
