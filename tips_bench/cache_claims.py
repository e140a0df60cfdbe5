"""Claim files: at most one live writer per shard, across processes and hosts sharing a file system.

A writer claims shard ``S`` by creating ``S.claim.<g>`` with ``O_CREAT|O_EXCL`` (atomic on local
file systems and NFSv3+), writing its pid, host, pid namespace, process start time and a random
token into it, and refreshing the file's mtime (the heartbeat) from a background thread while it
works. Claim generations make take-over lock-free: generation ``g`` is the live claim unless it is
stale (its owner is a dead process on this host, or its heartbeat is older than the timeout), in
which case the next writer creates generation ``g + 1``; a writer never deletes a live claim.
A writer removes its own claim when done; stale ones are removed once their shard is published.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLAIM_INFIX = ".claim."
_GEN = re.compile(r"\.claim\.(\d+)$")
MAX_GENERATIONS = 10_000


@dataclass(frozen=True)
class ClaimPolicy:
    """Heartbeat period and the age after which a claim whose owner cannot be checked is stale."""

    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None where /proc is unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat and len(stat) > 19 else None


HOST = socket.gethostname()
PIDNS = _pid_namespace()


def new_token() -> str:
    """A random writer token (used in claim contents and temp folder names)."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says about its owner, and when its heartbeat was last refreshed."""

    path: Path
    token: str
    pid: int
    host: str
    pidns: str
    start_ticks: int | None
    started: float
    heartbeat: float

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}" if self.pid > 0 else "a writer that is just starting"

    def is_local(self) -> bool:
        return self.host == HOST and self.pidns == PIDNS

    def owner_alive(self) -> bool | None:
        """True/False for a process of this host, None when it cannot be checked (another host)."""
        if not self.is_local() or self.pid <= 0:
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        stat = _proc_stat(self.pid)
        if stat is None:
            return True
        if stat[0] == "Z":  # exited, not yet reaped
            return False
        return self.start_ticks is None or len(stat) <= 19 or int(stat[19]) == self.start_ticks

    def stale(self, policy: ClaimPolicy, now: float | None = None) -> bool:
        if self.owner_alive() is False:
            return True
        return (time.time() if now is None else now) - self.heartbeat > policy.stale_after_s


def read_claim(path: Path) -> ClaimInfo | None:
    """The claim at ``path``; None when it vanished. A file still being written reads as anonymous."""
    try:
        heartbeat = path.stat().st_mtime
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        d = json.loads(raw)
        return ClaimInfo(path, str(d["token"]), int(d["pid"]), str(d["host"]), str(d.get("pidns", "")),
                         d.get("start_ticks"), float(d["started"]), heartbeat)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return ClaimInfo(path, "", -1, "unknown", "", None, heartbeat, heartbeat)


def claim_files(folder: Path, stem: str | None = None) -> list[Path]:
    """Claim files in ``folder`` (of one shard ``stem`` when given), oldest generation first."""
    pattern = f"{stem}{CLAIM_INFIX}*" if stem else f"*{CLAIM_INFIX}*"
    found = [(m.group(1), p) for p in folder.glob(pattern) if (m := _GEN.search(p.name))]
    return [p for _, p in sorted(found, key=lambda t: (claim_stem(t[1]), int(t[0])))]


def claim_stem(path: Path) -> str:
    """The shard stem a claim file belongs to (``shard_00003`` of ``shard_00003.claim.1``)."""
    return path.name.split(CLAIM_INFIX, 1)[0]


def _claim_path(folder: Path, stem: str, gen: int) -> Path:
    return folder / f"{stem}{CLAIM_INFIX}{gen}"


class Claim:
    """A claim this process holds; refreshes its heartbeat until released (use as a context manager)."""

    def __init__(self, path: Path, token: str, policy: ClaimPolicy, generation: int = 0):
        self.path, self.token, self.policy, self.generation = path, token, policy, generation
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.policy.heartbeat_s):
            info = read_claim(self.path)
            if info is None or info.token != self.token:
                self.lost = True  # judged stale and taken over: the shard's publish stays idempotent
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and delete the claim file (if it is still ours)."""
        self._stop.set()
        self._thread.join()
        info = read_claim(self.path)
        if info is not None and info.token == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(folder: Path, stem: str, token: str, policy: ClaimPolicy) -> Claim | ClaimInfo:
    """Claim shard ``stem``: a held ``Claim``, or the ``ClaimInfo`` of the live writer that holds it."""
    gen = 0
    while gen < MAX_GENERATIONS:
        path = _claim_path(folder, stem, gen)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = read_claim(path)
            if info is None:
                continue  # released in between: try this generation again
            if not info.stale(policy):
                return info
            gen += 1
            continue
        now = time.time()
        body = {"token": token, "pid": os.getpid(), "host": HOST, "pidns": PIDNS,
                "start_ticks": _start_ticks(os.getpid()), "started": now, "heartbeat_s": policy.heartbeat_s}
        try:  # no fsync: a claim lost in a host crash is as good as a stale one
            os.write(fd, json.dumps(body).encode())
        finally:
            os.close(fd)
        claim = Claim(path, token, policy, gen)
        rival = _live_above(folder, stem, gen, policy)
        if rival is not None:  # a lower generation was re-created after a clean-up: yield to the live one
            claim.release()
            return rival
        return claim
    raise RuntimeError(f"more than {MAX_GENERATIONS} stale claims on {folder / stem}")


def _live_above(folder: Path, stem: str, gen: int, policy: ClaimPolicy) -> ClaimInfo | None:
    for path in claim_files(folder, stem):
        m = _GEN.search(path.name)
        if m and int(m.group(1)) > gen and (info := read_claim(path)) is not None and not info.stale(policy):
            return info
    return None


def remove_stale(folder: Path, stem: str | None, policy: ClaimPolicy) -> int:
    """Delete the stale claims (of one shard, or all); returns how many were removed."""
    removed = 0
    for path in claim_files(folder, stem):
        info = read_claim(path)
        if info is not None and info.stale(policy):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def live_claims(folder: Path, policy: ClaimPolicy) -> list[ClaimInfo]:
    """Every live claim in ``folder``."""
    out = []
    for path in claim_files(folder):
        info = read_claim(path)
        if info is not None and not info.stale(policy):
            out.append(info)
    return out
