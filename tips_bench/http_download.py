"""Resumable HTTP(S) download of one file into ``<final>.part``, with a sha256 of what was received.

The caller decides what happens next (verify, rename, delete). A ``.part`` left by an interrupted
download is continued with a ``Range: bytes=N-`` request; a server that ignores ranges (200
instead of 206) or answers from another offset makes us start again from zero.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tips_bench import __version__
from tips_bench.errors import CheckpointError

CHUNK = 1 << 20
USER_AGENT = f"tips-bench/{__version__}"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")

#: (bytes received so far, total or None) -> None; called after every chunk.
ProgressHook = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class PartResult:
    """What one call received: the .part path, its sha256, its size and how many bytes came over the wire."""

    part: Path
    sha256: str
    size: int
    fetched: int
    resumed_from: int


def part_path(final: Path) -> Path:
    """Where the bytes of ``final`` are collected until they are verified."""
    return final.with_name(final.name + ".part")


def download_to_part(url: str, final: Path, *, timeout: float = 30.0, retries: int = 2,
                     on_start: Callable[[int, int | None], None] | None = None,
                     on_chunk: Callable[[int], None] | None = None) -> PartResult:
    """Fetch ``url`` into ``part_path(final)``, continuing an existing part; retry a broken transfer ``retries`` times.

    ``on_start(offset, total)`` is called before the body is read (for a progress bar), ``on_chunk(n)``
    after each chunk. Raises CheckpointError with one sentence on any failure; the part is kept when a
    transfer broke off (so the next call resumes) and removed on HTTP errors.
    """
    part = part_path(final)
    part.parent.mkdir(parents=True, exist_ok=True)
    first_offset = part.stat().st_size if part.exists() else 0
    fetched = 0
    attempt = 0
    while True:
        try:
            digest, size, got = _fetch_once(url, part, timeout, on_start, on_chunk)
            fetched += got
            return PartResult(part, digest, size, fetched, first_offset)
        except _BrokenOff as broken:
            fetched += broken.got
            attempt += 1
            if attempt > retries or broken.got == 0:
                raise CheckpointError(
                    f"the download of {final.name} from {url} broke off after {broken.have} of "
                    f"{_size_text(broken.total)} bytes ({broken.reason}); run the same command again to resume it"
                ) from None


class _BrokenOff(Exception):
    def __init__(self, have: int, total: int | None, got: int, reason: str):
        super().__init__(reason)
        self.have, self.total, self.got, self.reason = have, total, got, reason


def _size_text(total: int | None) -> str:
    return "an unknown number of" if total is None else str(total)


def _fetch_once(url: str, part: Path, timeout: float, on_start, on_chunk) -> tuple[str, int, int]:
    """One request: returns (sha256 hex, final size, bytes received) or raises _BrokenOff / CheckpointError."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return _range_not_satisfiable(url, part, offset, err, timeout)
        part.unlink(missing_ok=True)
        raise CheckpointError(_http_error_text(url, err.code, err.reason)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise CheckpointError(_network_error_text(url, err)) from None
    with response:
        placed = _start_and_total(response, offset)
        if placed is None:  # a 206 from another offset than asked: start the file again
            response.close()
            part.unlink(missing_ok=True)
            return _fetch_once(url, part, timeout, on_start, on_chunk)
        start, total = placed
        digest = hashlib.sha256()
        mode = "r+b" if start else "wb"
        if start:
            _hash_prefix(part, start, digest)
        got = 0
        if on_start is not None:
            on_start(start, total)
        with open(part, mode) as fh:
            fh.seek(start)
            fh.truncate()
            try:
                while block := response.read(CHUNK):
                    fh.write(block)
                    digest.update(block)
                    got += len(block)
                    if on_chunk is not None:
                        on_chunk(len(block))
            except (TimeoutError, http.client.IncompleteRead, OSError) as err:
                fh.flush()
                raise _BrokenOff(start + got, total, got, _reason(err)) from None
        size = start + got
        if total is not None and size != total:
            raise _BrokenOff(size, total, got, "the server closed the connection early")
    return digest.hexdigest(), size, got


def _start_and_total(response, offset: int) -> tuple[int, int | None] | None:
    """Body start and full size (from Content-Range / Content-Length); None for a range other than the one asked."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            return None
        return offset, None if match.group(3) == "*" else int(match.group(3))
    return 0, int(length) if length is not None and length.isdigit() else None


def _range_not_satisfiable(url: str, part: Path, offset: int, err, timeout: float) -> tuple[str, int, int]:
    """416 on a resume: the part is complete if the server's size equals it; otherwise start over."""
    match = _CONTENT_RANGE.match(err.headers.get("Content-Range", "").replace("*-*", "0-0")) if err.headers else None
    total = int(match.group(3)) if match and match.group(3) != "*" else None
    if total is None:
        total = _head_size(url, timeout)
    if total == offset:
        digest = hashlib.sha256()
        _hash_prefix(part, offset, digest)
        return digest.hexdigest(), offset, 0
    part.unlink()
    return _fetch_once(url, part, timeout, None, None)


def _head_size(url: str, timeout: float) -> int | None:
    try:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return None


def _hash_prefix(part: Path, upto: int, digest) -> None:
    with open(part, "rb") as fh:
        left = upto
        while left > 0 and (block := fh.read(min(CHUNK, left))):
            digest.update(block)
            left -= len(block)


def _reason(err: BaseException) -> str:
    if isinstance(err, http.client.IncompleteRead):
        return "the server closed the connection early"
    if isinstance(err, TimeoutError):
        return "the server stopped sending"
    return str(err) or type(err).__name__


def _http_error_text(url: str, code: int, reason: object) -> str:
    advice = {404: "check the URL in the backbone definition (tips-bench backbones -v)",
              403: "the file is not public; download it in a browser and pass --checkpoint",
              401: "the file needs a login; download it yourself and pass --checkpoint"}
    return f"the server answered {code} {reason} for {url}; {advice.get(code, 'try again later')}"


def _network_error_text(url: str, err: BaseException) -> str:
    reason = getattr(err, "reason", err)
    host = urlsplit(url).netloc or url
    return (f"could not download {url}: no connection to {host} ({reason}); check the network, "
            f"or use --offline with the files already in place")
