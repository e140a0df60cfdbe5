"""Result rows with full provenance, and an append-only JSON-lines store safe for concurrent writers."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

import tips_bench

if TYPE_CHECKING:
    import pandas as pd

RESULTS_ENV = "TIPS_BENCH_RESULTS"
DEFAULT_RESULTS_PATH = Path("results") / "runs.jsonl"
PROVENANCE_PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "sentencepiece")
LATEST_KEY = ("backbone", "task", "task_version", "metric", "seed")
#: Keys that describe how a run went rather than what was run; never part of a config hash.
VOLATILE_CONFIG_KEYS = frozenset({
    "timings", "wall_time_s", "images_per_s", "peak_memory_mb", "run_id", "timestamp", "fill_images_per_s",
})
DEFAULT_MODE = "cached"


def utc_now() -> str:
    """The current time as a UTC ISO 8601 string (microseconds, '+00:00' offset)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_run_id() -> str:
    """A fresh random run id (32 hex chars)."""
    return uuid.uuid4().hex


@dataclass
class ResultRow:
    """One metric value of one evaluation run, with everything needed to reproduce it."""

    run_id: str
    timestamp: str
    backbone: str
    backbone_family: str
    task: str
    task_version: int
    dataset: str
    split: str
    metric: str
    value: float
    higher_is_better: bool
    seed: int
    protocol: dict[str, Any]
    config_hash: str
    checkpoint_hash: str
    code_version: str
    packages: dict[str, str]
    device: str
    wall_time_s: float
    images_per_s: float
    peak_memory_mb: float
    num_samples: int
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of all fields (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One line of JSON (sorted keys, no newline)."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        """Build a row from a dict; ValueError on missing fields or wrong types. Unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a result row must be a JSON object, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data and n != "limit"]
        if missing:
            raise ValueError(f"result row lacks fields: {', '.join(missing)}")
        kwargs = {n: data[n] for n in names if n in data}
        return cls(**_coerce_fields(kwargs))

    @classmethod
    def from_json(cls, line: str | bytes) -> ResultRow:
        """Parse one JSON line written by `to_json`; raise ValueError if it is not a valid row."""
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"not valid JSON: {err}") from err
        return cls.from_dict(data)


_INT_FIELDS = ("task_version", "seed", "num_samples")
_FLOAT_FIELDS = ("value", "wall_time_s", "images_per_s", "peak_memory_mb")
_STR_FIELDS = (
    "run_id", "timestamp", "backbone", "backbone_family", "task", "dataset", "split", "metric",
    "config_hash", "checkpoint_hash", "code_version", "device",
)


def _coerce_fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise field types (ints stay ints, numbers become floats)."""
    for name in _STR_FIELDS:
        if not isinstance(kw[name], str):
            raise ValueError(f"field {name!r} must be a string, got {kw[name]!r}")
    for name in _INT_FIELDS:
        kw[name] = _as_int(name, kw[name])
    for name in _FLOAT_FIELDS:
        if isinstance(kw[name], bool) or not isinstance(kw[name], (int, float)):
            raise ValueError(f"field {name!r} must be a number, got {kw[name]!r}")
        kw[name] = float(kw[name])
    if not isinstance(kw["higher_is_better"], bool):
        raise ValueError(f"field 'higher_is_better' must be true/false, got {kw['higher_is_better']!r}")
    for name in ("protocol", "packages"):
        if not isinstance(kw[name], dict):
            raise ValueError(f"field {name!r} must be a JSON object, got {kw[name]!r}")
    if kw.get("limit") is not None:
        kw["limit"] = _as_int("limit", kw["limit"])
    return kw


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"field {name!r} must be an integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- provenance


def capture_provenance() -> dict[str, Any]:
    """Code version, package versions and device of this process: keys code_version, packages, device."""
    return {"code_version": code_version(), "packages": package_versions(), "device": device_description()}


def code_version() -> str:
    """`tips_bench.__version__`, plus '+g<sha>[.dirty]' when the package runs from a git checkout."""
    version = tips_bench.__version__
    pkg_dir = Path(tips_bench.__file__).resolve().parent
    top = _git(pkg_dir, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != pkg_dir.parent:
        return version  # not a checkout of this project (e.g. installed inside some other repo's venv)
    sha = _git(pkg_dir, "rev-parse", "--short", "HEAD")
    local = [f"g{sha}"] if sha else []
    if _git_dirty(pkg_dir):
        local.append("dirty")
    return f"{version}+{'.'.join(local)}" if local else version


def _git(cwd: Path, *args: str) -> str | None:
    """Run `git -C cwd args`; its stripped stdout, or None if git is missing or fails."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git_dirty(pkg_dir: Path) -> bool:
    """True if tracked files changed anywhere in the repo or untracked files exist inside the package."""
    out = _git(pkg_dir.parent, "status", "--porcelain", "--untracked-files=all")
    if out is None:
        return False
    prefix = pkg_dir.name + "/"
    for line in out.splitlines():
        status, path = line[:2], line[3:]
        if status != "??" or path.startswith(prefix):
            return True
    return False


def package_versions() -> dict[str, str]:
    """Versions of the packages that affect results (missing ones omitted), plus the Python version."""
    versions = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def device_description() -> str:
    """The CUDA device name(s) if torch sees a GPU, else the platform and CPU model."""
    gpu = _cuda_description()
    return gpu if gpu else f"{platform.platform()}; CPU {_cpu_model()} ({os.cpu_count()} logical cores)"


def _cuda_description() -> str | None:
    try:
        if importlib.util.find_spec("torch") is None:
            return None
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cuda = getattr(torch.version, "cuda", None)
    except Exception:  # a broken driver must not stop a run from being recorded
        return None
    return f"CUDA {', '.join(names)}" + (f" (CUDA {cuda})" if cuda else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def config_hash(obj: Any) -> str:
    """First 16 hex chars of the sha256 of `obj` as canonical JSON (sorted keys, compact)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stable_config(config: Any) -> Any:
    """``config`` with every volatile key (timings, throughput, ids, clocks) removed at any depth."""
    if isinstance(config, dict):
        return {k: stable_config(v) for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}
    if isinstance(config, (list, tuple)):
        return [stable_config(v) for v in config]
    return config


def run_config_hash(config: dict[str, Any]) -> str:
    """The config hash of a run: ``config_hash`` of the configuration alone, so identical runs share it.

    The runner passes ``{"protocol": ..., "weights": ..., "seed": ...}``; timings recorded inside the
    protocol (or anywhere else, under ``VOLATILE_CONFIG_KEYS``) do not change the hash.
    """
    return config_hash(stable_config(config))


# ---------------------------------------------------------------- store


def default_results_path() -> Path:
    """`$TIPS_BENCH_RESULTS` if set, else results/runs.jsonl relative to the current directory."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else DEFAULT_RESULTS_PATH


def latest(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """The newest row per (backbone, task, task_version, metric, seed); ties go to the later row."""
    best: dict[tuple, tuple[datetime, int, ResultRow]] = {}
    for index, row in enumerate(rows):
        key = tuple(getattr(row, k) for k in LATEST_KEY)
        rank = (parse_timestamp(row.timestamp), index, row)
        if key not in best or rank[:2] > best[key][:2]:
            best[key] = rank
    return [entry[2] for entry in sorted(best.values(), key=lambda e: e[1])]


def parse_timestamp(stamp: str) -> datetime:
    """Parse an ISO 8601 timestamp as aware UTC; unparsable stamps sort first."""
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class ResultsStore:
    """Append-only JSON-lines file of ResultRows, safe for several writer processes and for crashes."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_results_path()
        self.lock_path = Path(str(self.path) + ".lock")

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def _lock(self) -> FileLock:
        return FileLock(str(self.lock_path))

    def append(self, rows: Iterable[ResultRow]) -> None:
        """Append rows under an exclusive lock as one O_APPEND write, then fsync."""
        data = "".join(row.to_json() + "\n" for row in rows).encode("utf-8")
        if not data:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            new_file = not self.path.exists()
            if not new_file and _ends_without_newline(self.path):
                data = b"\n" + data  # a crash left a torn last line: start ours on a fresh line
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if new_file:
                _fsync_dir(self.path.parent)

    def rows(self) -> list[ResultRow]:
        """All readable rows in file order; corrupt or torn lines are skipped with a warning."""
        if not self.path.exists():
            return []
        try:
            with self._lock():
                data = self.path.read_bytes()
        except OSError:  # read-only location: the lock file cannot be created, read without it
            data = self.path.read_bytes()
        return list(_parse_lines(data, self.path))

    def latest(self, rows: Sequence[ResultRow] | None = None) -> list[ResultRow]:
        """`latest()` of the given rows, or of all rows in the store."""
        return latest(self.rows() if rows is None else rows)

    def frame(self) -> pd.DataFrame:
        """All readable rows as a DataFrame (see `rows_frame`)."""
        return rows_frame(self.rows())


# ---------------------------------------------------------------- DataFrame view

FRAME_COLUMNS = (*(f.name for f in dataclasses.fields(ResultRow)), "protocol_mode", "protocol_frame", "time")


def rows_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """One DataFrame row per ResultRow, in order: every field (``protocol`` and ``packages`` stay dicts), plus
    ``protocol_mode`` ("cached" unless the protocol says otherwise), ``protocol_frame`` ("" when absent) and
    ``time`` (the timestamp parsed as UTC; unparsable stamps sort first)."""
    import pandas as pd

    records = []
    for row in rows:
        record = row.to_dict()
        record["protocol_mode"] = str(row.protocol.get("mode") or DEFAULT_MODE)
        record["protocol_frame"] = str(row.protocol.get("frame") or "")
        record["time"] = parse_timestamp(row.timestamp)
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(FRAME_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    frame["limit"] = frame["limit"].astype("Int64")
    return frame


def frame_rows(frame: pd.DataFrame) -> list[ResultRow]:
    """ResultRows back from a frame made by `rows_frame` (extra columns are ignored)."""
    import pandas as pd

    names = [f.name for f in dataclasses.fields(ResultRow)]
    out = []
    for record in frame[names].to_dict("records"):
        record["limit"] = None if pd.isna(record["limit"]) else int(record["limit"])
        out.append(ResultRow.from_dict(record))
    return out


def latest_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest row per (backbone, task, task_version, metric, seed), as `latest`; ties go to the later row."""
    if frame.empty:
        return frame
    order = frame.assign(_order=range(len(frame)))
    newest = order.sort_values(["time", "_order"], kind="stable").drop_duplicates(list(LATEST_KEY), keep="last")
    return newest.sort_values("_order").drop(columns="_order")


class CorruptResultLine(RuntimeWarning):
    """A results-file line that is not a result row (skipped); ``lineno`` and ``reason`` say which and why."""

    def __init__(self, path: Path, lineno: int, reason: str) -> None:
        super().__init__(f"{path}:{lineno}: skipping corrupt result line ({reason})")
        self.lineno, self.reason = lineno, reason


def _parse_lines(data: bytes, path: Path) -> Iterable[ResultRow]:
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield ResultRow.from_json(line)
        except ValueError as err:
            warnings.warn(CorruptResultLine(path, lineno, str(err)), stacklevel=2)


def _ends_without_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _write_all(fd: int, data: bytes) -> None:
    """One os.write; only if the OS writes short (disk nearly full, signal) does it continue with the rest."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (best effort; not possible on every OS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "ResultRow", "ResultsStore", "capture_provenance", "code_version", "config_hash", "default_results_path",
    "device_description", "frame_rows", "latest", "latest_frame", "new_run_id", "parse_timestamp", "package_versions",
    "rows_frame", "run_config_hash", "stable_config", "utc_now",
]
