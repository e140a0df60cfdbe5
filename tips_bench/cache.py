"""A content-addressed, sharded, crash-safe store of extracted features, safe for many writers.

An entry's key is the sha256 of everything that determines its content (backbone weights
hash, layers, resolution, preprocessing, dataset split fingerprint, code version). Its folder
holds ``meta.json`` (the key fields, shard size, item count, the tasks that used it) and one
folder per shard (``shard_00000/``) with the shard's arrays (see ``tips_bench.cache_arrays``:
fixed ``(n, ...)`` arrays and ragged lists) and ``done.json`` (every file's size and CRC32).

Any number of processes, on any hosts sharing the file system, may fill one entry at once:
each shard is claimed by an exclusive claim file (``tips_bench.cache_claims``), written to a
temp folder unique to its writer, fsynced and published by an atomic rename; a shard that is
already there and valid counts as published. ``fill`` extracts the shards it can claim, waits
for those others are writing, and takes over claims left by dead writers. Each complete shard
is verified (sizes and CRC32s) the first time a process reads it; a corrupt one is rebuilt by
the next fill. Readers memory-map one shard at a time, so probes stream caches larger than
memory. See docs/cache.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from tips_bench import cache_claims as claims
from tips_bench.cache_arrays import (
    SHAPES_SUFFIX,
    ArrayValue,
    RaggedArray,
    crc32_file,
    open_fixed,
    shapes_of,
    write_array,
)
from tips_bench.cache_disk import DISK_RESERVE_BYTES, check_free_space, estimate_bytes
from tips_bench.errors import TipsBenchError

#: Bump when the on-disk format, or what the extraction stores for the same key fields, changes.
CACHE_FORMAT_VERSION = 2
DEFAULT_SHARD_BYTES = 64 << 20
_KEY = re.compile(r"^[0-9a-f]{24}$")
_SHARD_DIR = re.compile(r"^shard_\d{5}$")
_SCRATCH = re.compile(r"^(shard_\d{5})\.(tmp|bad)\.([0-9a-f]+)$")


class CacheBusyError(TipsBenchError):
    """An operation needs an entry that another live process is filling."""


def default_cache_dir() -> Path:
    """``$TIPS_BENCH_CACHE`` or ``~/.cache/tips-bench/features``."""
    return Path(os.environ.get("TIPS_BENCH_CACHE", "~/.cache/tips-bench/features")).expanduser()


def cache_key(fields: dict[str, Any]) -> str:
    """sha256 (first 24 hex) of the canonical JSON of the key fields."""
    blob = json.dumps({"cache_format": CACHE_FORMAT_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- layout -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int
    path: Path

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class EntryStatus:
    """What ``tips-bench cache ls`` shows: complete, partial, filling, old format or empty."""

    state: str
    shards_done: int
    shards_total: int
    writers: tuple[str, ...] = ()


def _collect(batches: Iterable[Mapping[str, ArrayValue]]) -> dict[str, ArrayValue]:
    """Join a shard's batches: fixed arrays concatenated, ragged lists extended."""
    fixed: dict[str, list[np.ndarray]] = {}
    ragged: dict[str, list] = {}
    for batch in batches:
        for name, value in batch.items():
            is_list = isinstance(value, list)
            if name in (fixed if is_list else ragged):
                raise ValueError(f"array {name} is a list (ragged) in some batches and an ndarray in others")
            if is_list:
                ragged.setdefault(name, []).extend(value)
            else:
                fixed.setdefault(name, []).append(np.asarray(value))
    return {**{k: np.concatenate(v) for k, v in fixed.items()}, **ragged}


class CacheEntry:
    """One extracted (backbone, dataset split, protocol) feature set."""

    def __init__(self, root: Path, fields: dict[str, Any], *, key: str | None = None,
                 policy: claims.ClaimPolicy | None = None, wait_timeout_s: float | None = None, poll_s: float = 0.2):
        self.fields = fields
        self.key = key or cache_key(fields)
        self.path = Path(root) / self.key
        self.policy = policy or claims.ClaimPolicy()
        self.wait_timeout_s = wait_timeout_s
        self.poll_s = poll_s
        self.token = claims.new_token()
        self._verified: set[int] = set()
        self._schema_cache: dict[str, dict[str, Any]] | None = None
        self._ready = False

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> CacheEntry:
        """An existing entry folder (key = folder name, fields from its meta.json)."""
        entry = cls(path.parent, {}, key=path.name, **kwargs)
        entry.fields = (entry.meta() or {}).get("fields", {})
        return entry

    # -- meta ---------------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def meta(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return None

    def _current_meta(self) -> dict[str, Any] | None:
        meta = self.meta()
        return meta if meta is not None and meta.get("format") == CACHE_FORMAT_VERSION else None

    @property
    def num_items(self) -> int:
        meta = self._current_meta()
        return int(meta["num_items"]) if meta else 0

    def shards(self) -> list[Shard]:
        meta = self._current_meta()
        if meta is None:
            return []
        n, size = int(meta["num_items"]), int(meta["shard_size"])
        return [Shard(i, s, min(s + size, n), self.path / f"shard_{i:05d}") for i, s in enumerate(range(0, n, size))]

    @contextlib.contextmanager
    def _meta_lock(self) -> Iterator[None]:
        try:
            with FileLock(str(self.path / "meta.lock"), timeout=120):
                yield
        except Timeout as exc:
            raise TipsBenchError(f"could not lock {self.path / 'meta.lock'} within 120 s; another process holds it, "
                                 "wait for it or check the cache's file system") from exc

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.path / f"meta.json.{self.token}.tmp"
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, self.meta_path)

    def _update_meta(self, update: Callable[[dict[str, Any]], None]) -> None:
        with self._meta_lock():
            meta = self.meta()
            if meta is None:
                raise TipsBenchError(f"feature cache entry {self.key} was removed while in use; run again")
            update(meta)
            self._write_meta(meta)

    def annotate(self, **values: Any) -> None:
        """Add facts to meta.json (e.g. the extraction rate), atomically and race-free."""
        self._update_meta(lambda meta: meta.update(values))

    def add_user(self, task_name: str) -> None:
        """Record that a task used this entry (``tips-bench cache ls/rm --task``); atomic and race-free."""
        def add(meta: dict[str, Any]) -> None:
            users = meta.setdefault("users", [])
            if task_name not in users:
                users.append(task_name)

        self._update_meta(add)
        self.touch_used()

    def users(self) -> list[str]:
        return list((self.meta() or {}).get("users", []))

    def touch_used(self) -> None:
        """Stamp the entry as used now (``tips-bench cache ls`` shows it)."""
        with contextlib.suppress(OSError):
            (self.path / "last_used").touch()

    def last_used(self) -> float | None:
        times = []
        for name in ("last_used", "meta.json"):
            with contextlib.suppress(OSError):
                times.append((self.path / name).stat().st_mtime)
        return max(times, default=None)

    # -- integrity ----------------------------------------------------------------------------
    def _shard_problem(self, shard: Shard, crc: bool = True) -> str | None:
        """None when the shard is complete and intact, else what is wrong ('missing' when absent)."""
        if not shard.path.is_dir():
            return "missing"
        try:
            record = json.loads((shard.path / "done.json").read_text())
        except FileNotFoundError:
            return "partial (no done.json)"
        except json.JSONDecodeError:
            return "done.json is unreadable"
        files = record.get("files")
        if not isinstance(files, dict) or (record.get("start"), record.get("stop")) != (shard.start, shard.stop):
            return "done.json does not match this entry's layout"
        for fname, info in files.items():
            file = shard.path / fname
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                return f"{fname} is missing"
            if size != info["bytes"]:
                return f"{fname} has {size} bytes instead of {info['bytes']}"
            if crc and crc32_file(file) != info["crc32"]:
                return f"{fname} fails its CRC32 check"
        return None

    def _shard_ok(self, shard: Shard) -> bool:
        if shard.index in self._verified:
            return True
        if self._shard_problem(shard) is not None:
            return False
        self._verified.add(shard.index)
        return True

    def missing_shards(self) -> list[Shard]:
        """Shards that are absent, partial or corrupt (the next fill rebuilds them)."""
        return [s for s in self.shards() if not self._shard_ok(s)]

    def complete(self) -> bool:
        return self._current_meta() is not None and not self.missing_shards()

    def _discard(self, path: Path) -> None:
        """Delete a folder by first renaming it aside (atomic), so no other writer's new one is hit."""
        aside = path.with_name(f"{path.name}.bad.{self.token}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def _clean_scratch(self) -> int:
        """Delete temp folders of dead writers and leftovers of interrupted deletes; returns the count."""
        removed = 0
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return 0
        for name in names:
            m = _SCRATCH.match(name)
            if not m:
                continue
            stem, kind, token = m.groups()
            if kind == "tmp" and (token == self.token or not self._orphaned(stem, token, self.path / name)):
                continue
            path = self.path / name
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        return removed

    def _orphaned(self, stem: str, token: str, tmp: Path) -> bool:
        """Whether a temp folder's writer is gone: its claim is stale, or it has none and is old."""
        owners = [c for p in claims.claim_files(self.path, stem) if (c := claims.read_claim(p)) and c.token == token]
        if owners:
            return all(c.stale(self.policy) for c in owners)
        try:
            return time.time() - tmp.stat().st_mtime >= self.policy.stale_after_s
        except FileNotFoundError:
            return False

    # -- writing ------------------------------------------------------------------------------
    def prepare(self, num_items: int, shard_size: int) -> None:
        """Create the folder and meta.json, race-free (kept as is if an earlier run wrote the same)."""
        if num_items <= 0:
            raise TipsBenchError("nothing to extract: the dataset split is empty")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise TipsBenchError(f"cannot create the feature cache entry {self.path}: a file is in the way; point "
                                 "--cache-dir or $TIPS_BENCH_CACHE at a folder") from exc
        with self._meta_lock():
            meta = self.meta()
            if meta is not None and meta.get("format") == CACHE_FORMAT_VERSION and meta["num_items"] == num_items:
                return
            if meta is not None:
                busy = claims.live_claims(self.path, self.policy)
                if busy:
                    raise CacheBusyError(f"feature cache entry {self.key} is being filled by {busy[0].describe()} "
                                         f"with a different layout; wait for it to finish")
                for child in list(self.path.iterdir()):
                    if _SHARD_DIR.match(child.name):
                        self._discard(child)
                self._verified.clear()
                self._schema_cache = None
            self._write_meta({"format": CACHE_FORMAT_VERSION, "key": self.key, "fields": self.fields,
                              "num_items": num_items, "shard_size": shard_size, "created": time.time(),
                              "users": []})

    def _schema(self) -> dict[str, dict[str, Any]] | None:
        """Per array: ragged or fixed, dtype, shape (from the first shard on disk)."""
        if self._schema_cache is None:
            for shard in self.shards():
                with contextlib.suppress(FileNotFoundError, NotADirectoryError, json.JSONDecodeError, KeyError):
                    self._schema_cache = json.loads((shard.path / "done.json").read_text())["arrays"]
                    break
        return self._schema_cache

    def write_shard(self, shard: Shard, arrays: Mapping[str, ArrayValue]) -> None:
        """Write one shard atomically: a temp folder unique to this writer, fsync, CRCs, rename.

        Each value is an ndarray ``(n, ...)`` or a list of ``n`` ndarrays of one dtype and any shapes
        (ragged); a name is fixed or ragged in every shard of an entry. If a valid copy of the shard
        appears meanwhile (another writer), this one is dropped.
        """
        schema = self._schema() or {}
        if not arrays or (schema and set(arrays) != set(schema)):
            raise ValueError(f"shard {shard.index} of cache entry {self.key} got arrays {sorted(arrays)}; the entry "
                             f"holds {sorted(schema)}" if schema else f"shard {shard.index} got no arrays")
        for name, value in arrays.items():
            if len(value) != shard.size:
                raise ValueError(f"array {name} has {len(value)} rows, shard expects {shard.size}")
            if name in schema and schema[name]["ragged"] != isinstance(value, list):
                kind = "ragged (a list)" if schema[name]["ragged"] else "fixed (an ndarray)"
                raise ValueError(f"array {name} is {kind} in this entry's other shards; keep one kind per name")
        tmp = self.path / f"{shard.path.name}.tmp.{self.token}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            record: dict[str, Any] = {"start": shard.start, "stop": shard.stop, "arrays": {}, "files": {},
                                      "writer": {"host": socket.gethostname(), "pid": os.getpid(),
                                                 "rank": os.environ.get("RANK")}}
            for name, value in arrays.items():
                info, files = write_array(tmp, name, value)
                record["arrays"][name] = info
                record["files"].update(files)
            with open(tmp / "done.json", "x") as fh:
                fh.write(json.dumps(record))
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_dir(tmp)
            self._publish(tmp, shard)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _publish(self, tmp: Path, shard: Shard) -> None:
        for _ in range(5):
            try:
                os.rename(tmp, shard.path)
                break
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            self._verified.discard(shard.index)
            if self._shard_ok(shard):  # another writer published it first: same content, keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return
            self._discard(shard.path)
        else:
            raise RuntimeError(f"could not publish {shard.path}: it keeps reappearing corrupt")
        _fsync_dir(self.path)
        self._verified.add(shard.index)

    def fill(self, produce: Callable[[int, int], Iterable[Mapping[str, ArrayValue]]],
             on_shard: Callable[[Shard], None] | None = None, *, timeout_s: float | None = None,
             progress: bool = True, check_space: bool = True) -> int:
        """Write every missing shard; ``produce(start, stop)`` yields batches of arrays for those items.

        Shards are claimed one by one, so concurrent fills (other ranks, other runs, other hosts)
        split the work; shards claimed by others are waited for (``timeout_s``: give up after that
        long, default never while their writers are alive) and taken over when their writer died.
        After the first shard this call writes, the free space for the rest is checked.
        Returns the number of items this call extracted itself (0 when the entry was complete).
        """
        if self._current_meta() is None:
            raise ValueError(f"cache entry {self.key} has no meta.json of this format; call prepare() first")
        self._clean_scratch()
        done, bar, announced = 0, None, False
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pending = self.missing_shards()
        try:
            while pending:
                blocked: list[tuple[Shard, claims.ClaimInfo]] = []
                for shard in pending:
                    if self._shard_ok(shard):
                        continue
                    got = claims.acquire(self.path, shard.path.name, self.token, self.policy)
                    if isinstance(got, claims.ClaimInfo):
                        blocked.append((shard, got))
                        continue
                    with got:
                        self._verified.discard(shard.index)
                        if self._shard_ok(shard):
                            continue
                        self._discard(shard.path)  # a corrupt or partial copy
                        self.write_shard(shard, _collect(produce(shard.start, shard.stop)))
                    if got.generation:  # taken over: the dead writers' claims can go now
                        claims.remove_stale(self.path, shard.path.name, self.policy)
                    done += shard.size
                    if on_shard is not None:
                        on_shard(shard)
                    if check_space and done == shard.size:
                        self._check_space_for_rest(shard)
                pending = [s for s, _ in blocked if not self._shard_ok(s)]
                if not pending:
                    break
                if not announced:
                    who = ", ".join(sorted({c.describe() for s, c in blocked if s in pending}))
                    _say(f"feature cache {self.key}: waiting for {len(pending)} shard(s) being extracted by {who}")
                    bar = _wait_bar(len(self.shards()), progress)
                    announced = True
                if deadline is not None and time.monotonic() > deadline:
                    who = ", ".join(sorted({c.describe() for s, c in blocked if s in pending}))
                    raise TipsBenchError(f"feature cache entry {self.key} is still being filled by {who} "
                                         f"({len(pending)} shard(s) to go) after {timeout_s:g} s; wait for it to "
                                         "finish and run again")
                time.sleep(self.poll_s)
                if bar is not None:
                    bar.n = len(self.shards()) - len(pending)
                    bar.refresh()
        except FileNotFoundError as exc:
            if not self.meta_path.exists():
                raise TipsBenchError(f"feature cache entry {self.key} was removed while being filled (by "
                                     "'tips-bench cache rm'?); run again") from exc
            raise
        finally:
            if bar is not None:
                bar.close()
        self.touch_used()
        return done

    def _check_space_for_rest(self, shard: Shard) -> None:
        written = sum(f.stat().st_size for f in shard.path.iterdir())
        rest = sum(s.size for s in self.missing_shards())
        if rest:
            check_free_space(self.path, int(written / shard.size * rest))

    def estimate_fill_bytes(self, bytes_per_item: int, num_items: int | None = None) -> int:
        """Bytes a fill will write: the missing items of a prepared entry, else ``num_items``."""
        shards = self.missing_shards() if self._current_meta() else []
        if shards:
            return estimate_bytes(sum(s.size for s in shards), bytes_per_item, shards[0].size)
        return estimate_bytes(num_items or 0, bytes_per_item) if num_items else 0

    def check_free_space(self, needed_bytes: int, reserve_bytes: int = DISK_RESERVE_BYTES) -> None:
        """Raise ``DiskSpaceError`` unless the cache's file system can take ``needed_bytes``."""
        check_free_space(self.path, needed_bytes, reserve_bytes)

    # -- reading ------------------------------------------------------------------------------
    def wait_until_complete(self, timeout_s: float | None = None) -> None:
        """Return once every shard is there and verified; while live writers fill it, wait (up to
        ``timeout_s``, default: as long as they are alive); otherwise say what is wrong."""
        if self._current_meta() is None:
            raise TipsBenchError(f"feature cache entry {self.key} does not exist in {self.path.parent} (or was "
                                 "removed); run again to extract it")
        start, announced = time.monotonic(), False
        while missing := self.missing_shards():
            live = {claims.claim_stem(c.path): c for c in claims.live_claims(self.path, self.policy)}
            holders = [live.get(s.path.name) for s in missing]
            total = len(self.shards())
            if any(h is None for h in holders):
                raise TipsBenchError(f"feature cache entry {self.key} is incomplete ({len(missing)} of {total} "
                                     "shards missing or corrupt) and no process is filling it; run again to "
                                     "rebuild the missing shards")
            who = ", ".join(sorted({h.describe() for h in holders if h is not None}))
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                raise TipsBenchError(f"feature cache entry {self.key} is still being filled by {who} "
                                     f"({len(missing)} of {total} shards to go); wait for it to finish or allow "
                                     "a longer wait")
            if not announced:
                _say(f"feature cache {self.key}: waiting for {who} to finish filling it")
                announced = True
            time.sleep(self.poll_s)

    def _ensure_ready(self) -> None:
        if not self._ready:
            self.wait_until_complete(self.wait_timeout_s)
            self._ready = True
            self.touch_used()

    def _info(self, name: str) -> dict[str, Any]:
        schema = self._schema() or {}
        if name not in schema:
            raise KeyError(f"no array {name!r} in feature cache entry {self.key} (it has {sorted(schema)})")
        return schema[name]

    def array_names(self) -> list[str]:
        return sorted(self._schema() or {})

    def is_ragged(self, name: str) -> bool:
        """Whether the array's items differ in shape (stored as a ragged array)."""
        return bool(self._info(name)["ragged"])

    def item_shape(self, name: str) -> tuple[int, ...]:
        """Shape of one item of a fixed array (e.g. (D, h, w) for a patch map)."""
        if self.is_ragged(name):
            raise ValueError(f"array {name} of feature cache entry {self.key} is ragged (its items differ in "
                             f"shape); use item_shapes({name!r})")
        return tuple(self._info(name)["shape"][1:])

    def item_shapes(self, name: str) -> list[tuple[int, ...]]:
        """The shape of every item, in order (ragged or fixed arrays)."""
        self._ensure_ready()
        if not self.is_ragged(name):
            return [self.item_shape(name)] * self.num_items
        out: list[tuple[int, ...]] = []
        for shard in self.shards():
            out += shapes_of(np.load(shard.path / f"{name}{SHAPES_SUFFIX}.npy"))
        return out

    def _open(self, shard: Shard, name: str) -> np.ndarray | RaggedArray:
        if not self._shard_ok(shard):
            raise TipsBenchError(f"feature cache shard {shard.path} is missing or corrupt; run again to rebuild it")
        ragged = self.is_ragged(name)
        try:
            return RaggedArray(shard.path, name) if ragged else open_fixed(shard.path, name)
        except FileNotFoundError as exc:
            raise TipsBenchError(f"feature cache shard {shard.path} vanished while being read (removed by "
                                 "'tips-bench cache rm' or 'verify --fix'?); run again to rebuild it") from exc

    def read(self, name: str, dtype: Any = None) -> np.ndarray | list[np.ndarray]:
        """The whole array in memory (for small arrays: globals, labels): an ndarray, or a list of
        per-item ndarrays (floating ones cast to ``dtype``) for a ragged array."""
        self._ensure_ready()
        shards = self.shards()
        if self.is_ragged(name):
            items: list[np.ndarray] = []
            for shard in shards:
                view = self._open(shard, name)
                items += view.take(range(len(view)), dtype)
            return items
        return np.concatenate([np.asarray(self._open(s, name), dtype=dtype) for s in shards])

    def read_rows(self, name: str, rows: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """The given rows (ascending global item indices, any shards) of one array, copied out in that order.

        Each shard holding some of the rows is memory-mapped once and released after the copy, so memory
        stays bounded by the result plus the touched pages of one shard (for shuffled streaming in blocks).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= self.num_items or np.any(np.diff(rows) < 0)):
            raise ValueError(f"rows must be ascending indices in [0, {self.num_items})")
        out: np.ndarray | None = None
        for shard in self.shards():
            lo, hi = np.searchsorted(rows, [shard.start, shard.stop])
            if lo < hi:
                part = _rows(self._open(shard, name), rows[lo:hi] - shard.start, dtype)
                if out is None:
                    out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
                out[lo:hi] = part
        if out is None:
            return np.zeros((0, *self.item_shape(name)), dtype=dtype)
        return out

    def iter_batches(self, names: Iterable[str], batch_size: int, seed: int | None = None,
                     dtype: Any = np.float32) -> Iterator[dict[str, np.ndarray | list[np.ndarray]]]:
        """Stream batches shard by shard (shuffled shard order and rows when ``seed`` is set).

        Fixed arrays come as ndarrays, ragged ones as lists of ndarrays; floating data is cast to
        ``dtype``. Only one shard is memory-mapped at a time and each batch is copied out, so memory
        stays bounded by one batch plus one shard's touched pages.
        """
        names = list(names)
        self._ensure_ready()
        rng = np.random.default_rng(seed) if seed is not None else None
        shards = self.shards()
        order = rng.permutation(len(shards)) if rng is not None else range(len(shards))
        for si in order:
            shard = shards[si]
            views = {n: self._open(shard, n) for n in names}
            rows = np.arange(shard.size)
            if rng is not None:
                rng.shuffle(rows)
            for b in range(0, len(rows), batch_size):
                idx = np.sort(rows[b : b + batch_size])
                yield {n: v.take(idx, dtype) if isinstance(v, RaggedArray) else _rows(v, idx, dtype)
                       for n, v in views.items()}
            del views

    # -- administration -----------------------------------------------------------------------
    def status(self) -> EntryStatus:
        """Complete / partial / filling (by whom) / old format / empty, from a quick look (no CRCs)."""
        meta = self.meta()
        if meta is None:
            return EntryStatus("empty", 0, 0)
        if meta.get("format") != CACHE_FORMAT_VERSION:
            return EntryStatus("old format", 0, 0)
        shards = self.shards()
        present = sum(self._shard_problem(s, crc=False) is None for s in shards)
        writers = tuple(sorted({c.describe() for c in claims.live_claims(self.path, self.policy)}))
        state = "complete" if present == len(shards) else "filling" if writers else "partial"
        return EntryStatus(state, present, len(shards), writers)

    def size_bytes(self) -> int:
        total = 0
        for folder, _, files in os.walk(self.path):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, f)).st_size
        return total

    def verify(self, fix: bool = False, on_shard: Callable[[Shard], None] | None = None) -> list[tuple[str, str]]:
        """Check every present shard's sizes and CRC32s; returns (shard, problem) pairs.

        Absent shards (a partial entry) are not problems. With ``fix``, corrupt shards are deleted
        (under their claim, so never one being rebuilt) for the next fill to rebuild, and temp
        folders of dead writers and stale claims are removed.
        """
        problems = []
        for shard in self.shards():
            problem = self._shard_problem(shard, crc=True)
            if on_shard is not None:
                on_shard(shard)
            if problem is None or problem == "missing":
                continue
            if fix:
                got = claims.acquire(self.path, shard.path.name, self.token, self.policy)
                if isinstance(got, claims.ClaimInfo):
                    problem += f" (being rebuilt by {got.describe()}; left alone)"
                else:
                    with got:
                        self._discard(shard.path)
                    problem += " (deleted; the next run rebuilds it)"
            problems.append((shard.path.name, problem))
        if fix:
            self._clean_scratch()
            claims.remove_stale(self.path, None, self.policy)
        self._verified.clear()
        return problems

    def remove(self) -> None:
        """Delete the entry, unless a live process is filling it (``CacheBusyError``)."""
        busy = claims.live_claims(self.path, self.policy)
        if busy:
            raise CacheBusyError(f"feature cache entry {self.key} is being filled by {busy[0].describe()}; "
                                 "wait for it to finish")
        trash = self.path.with_name(f".trash-{self.key}-{self.token}")
        try:
            os.rename(self.path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _rows(view: np.ndarray, idx: np.ndarray, dtype: Any) -> np.ndarray:
    out = view[idx]  # fancy indexing copies
    if dtype is not None and np.issubdtype(out.dtype, np.floating):
        return out.astype(dtype, copy=False)
    return out


def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _wait_bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="shards done (other writers)", unit="shard", disable=not progress, leave=False)


class FeatureCache:
    """The folder holding every cache entry."""

    def __init__(self, root: str | Path | None = None, *, policy: claims.ClaimPolicy | None = None,
                 wait_timeout_s: float | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.policy = policy
        self.wait_timeout_s = wait_timeout_s

    def _kwargs(self) -> dict[str, Any]:
        return {"policy": self.policy, "wait_timeout_s": self.wait_timeout_s}

    def entry(self, fields: dict[str, Any]) -> CacheEntry:
        return CacheEntry(self.root, fields, **self._kwargs())

    def check_root(self) -> None:
        """Raise one sentence when the cache folder is a file."""
        if self.root.exists() and not self.root.is_dir():
            raise TipsBenchError(f"the feature cache folder {self.root} is a file, not a folder; point --cache-dir "
                                 "or $TIPS_BENCH_CACHE at a folder")

    def entries(self) -> list[CacheEntry]:
        """Every entry folder (any format), by key."""
        self.check_root()
        if not self.root.exists():
            return []
        return [CacheEntry.open(p, **self._kwargs()) for p in sorted(self.root.iterdir())
                if p.is_dir() and _KEY.match(p.name)]

    def find(self, key: str) -> CacheEntry:
        """The entry whose key is or starts with ``key`` (at least 4 characters)."""
        matches = [e for e in self.entries() if e.key.startswith(key)] if len(key) >= 4 else []
        if len(matches) != 1:
            what = "matches several entries" if matches else "is not an entry"
            raise TipsBenchError(f"'{key}' {what} of the feature cache {self.root}; 'tips-bench cache ls' lists "
                                 "the keys (give at least 4 leading characters)")
        return matches[0]

    def clean_trash(self) -> None:
        """Finish deletes that were interrupted (folders renamed aside by ``remove``)."""
        if self.root.is_dir():
            for p in self.root.glob(".trash-*"):
                shutil.rmtree(p, ignore_errors=True)

    def check_free_space(self, needed_bytes: int, reserve_bytes: int = DISK_RESERVE_BYTES) -> None:
        """Raise ``DiskSpaceError`` unless the cache's file system can take ``needed_bytes``."""
        check_free_space(self.root, needed_bytes, reserve_bytes)


def shard_size_for(bytes_per_item: int, target_bytes: int | None = None) -> int:
    """Items per shard so that one shard is about ``target_bytes`` (default ``$TIPS_BENCH_SHARD_MB`` MB or 64 MB;
    smaller shards spread one split's extraction over more ranks)."""
    if target_bytes is None:
        raw = os.environ.get("TIPS_BENCH_SHARD_MB")
        try:
            target_bytes = int(float(raw) * (1 << 20)) if raw else DEFAULT_SHARD_BYTES
        except (ValueError, OverflowError) as exc:
            raise TipsBenchError(f"TIPS_BENCH_SHARD_MB={raw} is not a number of megabytes; set it to e.g. 64 or "
                                 "unset it") from exc
        if target_bytes < 1:
            raise TipsBenchError(f"TIPS_BENCH_SHARD_MB={raw} is not a positive number of megabytes; set it to e.g. "
                                 "64 or unset it")
    return max(1, target_bytes // max(1, bytes_per_item))
