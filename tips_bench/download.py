"""Fetch a backbone's official checkpoint files into a checkpoint folder, verified by sha256.

What to fetch comes from `tips_bench.download_sources`; hub files go through `tips_bench.hub_download`
(huggingface_hub), other URLs through `tips_bench.http_download` (resumable Range requests). Bytes are
collected under a temporary name (``<file>.part``, or a staging folder for folders), checked against the
sha256 in the definition (``checkpoint: sha256: {role: hex}``), else the one recorded on the first
download (``<folder>/.tips-bench-sha256.json``), else the hub's own sha256, and only then moved to the
final name. ``--offline``, ``$TIPS_BENCH_OFFLINE=1`` and ``$HF_HUB_OFFLINE=1`` forbid the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from tips_bench.atomic import atomic_path
from tips_bench.backbones.checkpoints import CheckpointFiles, config_path, configured_dirs
from tips_bench.backbones.spec import BackboneSpec
from tips_bench.download_sources import HubRef, RemoteFile, Source, is_generic, sources
from tips_bench.errors import CheckpointError
from tips_bench.http_download import download_to_part, part_path
from tips_bench.hub_download import hub_download_to, hub_endpoint, hub_listing, hub_sha256

SHA_FILE = ".tips-bench-sha256.json"
STAGING = ".tips-bench-partial"
OFFLINE_ENV = ("TIPS_BENCH_OFFLINE", "HF_HUB_OFFLINE")

__all__ = ["SHA_FILE", "STAGING", "ChecksumBook", "FetchReport", "FileReport", "ensure_backbones", "ensure_files",
           "fetch_backbone", "is_generic", "offline_requested", "sha256_of", "sources", "target_dir"]


@dataclass
class FileReport:
    """What happened to one file: 'downloaded', 'present', 'verified' or 'recorded'."""

    relpath: str
    status: str
    size: int = 0
    sha256: str = ""
    fetched: int = 0
    resumed_from: int = 0


@dataclass
class FetchReport:
    """The files of one backbone in one checkpoint folder."""

    backbone: str
    folder: Path
    files: list[FileReport] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------- where, and whether the network may be used


def offline_requested(flag: bool = False) -> bool:
    """``--offline``, or ``$TIPS_BENCH_OFFLINE`` / ``$HF_HUB_OFFLINE`` set to 1/true/yes/on."""
    return flag or any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_ENV)


def target_dir(folder: str | Path | None = None) -> Path:
    """``folder``, else the first configured checkpoint folder; created if missing."""
    if folder is not None:
        chosen = Path(folder).expanduser()
    else:
        dirs = configured_dirs()
        if not dirs:
            raise CheckpointError(f"there is no checkpoint folder to download into; pass --dir DIR, set "
                                  f"$TIPS_BENCH_CHECKPOINTS or add checkpoint_dirs to {config_path()}")
        chosen = dirs[0]
    if chosen.exists() and not chosen.is_dir():
        raise CheckpointError(f"checkpoint folder {chosen} is a file; pass a folder")
    try:
        chosen.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the checkpoint folder {chosen} ({exc.strerror}); pick another with "
                              f"--dir") from None
    return chosen


# ---------------------------------------------------------------- recorded checksums


class ChecksumBook:
    """``<folder>/.tips-bench-sha256.json``: relpath -> {sha256, url, size, origin}; updated under a file lock."""

    def __init__(self, folder: Path):
        self.path = folder / SHA_FILE
        self._lock = FileLock(str(self.path) + ".lock")

    def entries(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{self.path} is not valid JSON ({exc}); delete it to record the hashes anew") \
                from None
        return data if isinstance(data, dict) else {}

    def get(self, relpath: str) -> dict | None:
        return self.entries().get(relpath)

    def put(self, relpath: str, sha256: str, url: str, size: int, origin: str) -> None:
        with self._lock:
            data = self.entries()
            data[relpath] = {"sha256": sha256, "url": url, "size": size, "origin": origin}
            with atomic_path(self.path, suffix=".tmp") as tmp:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    """The full sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- fetching


def ensure_files(spec: BackboneSpec, dir: str | Path | None = None, offline: bool = False,
                 progress: bool = True, checkpoint: str | Path | None = None) -> dict[str, Path]:
    """The path of every checkpoint role of ``spec``, downloading the ones found nowhere into ``dir``.

    Files are looked for where the loaders look (``checkpoint``, ``$TIPS_BENCH_CHECKPOINTS``, the config
    file) and in ``dir``. Missing ones go to ``dir`` (default: the first checkpoint folder). Called by
    ``run --download`` and ``features --download`` before the backbone is loaded.
    """
    if not spec.checkpoint_files:
        return {}
    finder = CheckpointFiles(spec, checkpoint)
    chosen = Path(dir).expanduser() if dir is not None else None
    found: dict[str, Path] = {}
    for role, name in spec.checkpoint_files.items():
        hit = chosen / name if chosen is not None and (chosen / name).exists() else finder.find(role)
        if hit is not None:
            found[role] = hit
    if len(found) == len(spec.checkpoint_files):
        return found
    report = fetch_backbone(spec, dir=dir, offline=offline, progress=progress,
                            roles=[r for r in spec.checkpoint_files if r not in found])
    return {**found, **report.paths}


def fetch_backbone(spec: BackboneSpec, dir: str | Path | None = None, offline: bool = False,
                   progress: bool = True, verify: bool = False, roles: list[str] | None = None,
                   endpoint: str | None = None) -> FetchReport:
    """Download the missing files of ``spec`` into ``dir`` (``tips-bench fetch``); with ``verify``, re-hash
    the files already there against the definition's or the recorded sha256."""
    if not spec.checkpoint_files:
        return FetchReport(spec.name, Path(dir) if dir else Path("."))
    wanted = [s for s in sources(spec) if roles is None or s.role in roles]
    folder = target_dir(dir)
    book = ChecksumBook(folder)
    report = FetchReport(spec.name, folder)
    for source in wanted:
        final = folder / source.name
        if final.exists():
            _check_same_origin(spec, source, folder, book)
            report.files += _verify_present(source, folder, book) if verify else [FileReport(source.name, "present")]
        elif offline_requested(offline):
            raise CheckpointError(
                f"{spec.name} needs its {source.role} file {source.name}, which is not in {folder}, and downloads "
                f"are off (--offline, $TIPS_BENCH_OFFLINE or $HF_HUB_OFFLINE); allow the network or place the "
                f"file there yourself"
            )
        else:
            report.files += _download_source(source, folder, book, progress, endpoint)
        report.paths[source.role] = final
    return report


def _check_same_origin(spec: BackboneSpec, source: Source, folder: Path, book: ChecksumBook) -> None:
    """Two backbones may share a file name (e.g. both SigLIP sizes): refuse a file fetched from another URL."""
    for remote in source.files:
        entry = book.get(remote.relpath)
        if entry and entry.get("url") and entry["url"] != remote.url and remote.sha256 is None:
            raise CheckpointError(
                f"{folder / remote.relpath} was fetched from {entry['url']}, not from {remote.url} as {spec.name} "
                f"needs (two backbones use the same file name); fetch {spec.name} into its own folder with --dir"
            )


def _verify_present(source: Source, folder: Path, book: ChecksumBook) -> list[FileReport]:
    files = source.files or tuple(
        RemoteFile(str(p.relative_to(folder)), "") for p in sorted((folder / source.name).rglob("*")) if p.is_file()
    )
    reports = []
    for remote in files:
        path = folder / remote.relpath
        if not path.is_file():
            raise CheckpointError(f"{path} is missing from the folder {folder / source.name}; delete the folder and "
                                  f"fetch it again")
        digest = sha256_of(path)
        entry = book.get(remote.relpath)
        expected = remote.sha256 or (entry or {}).get("sha256")
        if expected is None:
            book.put(remote.relpath, digest, remote.url, path.stat().st_size, "recorded on verify")
            reports.append(FileReport(remote.relpath, "recorded", path.stat().st_size, digest))
            continue
        if digest != expected:
            origin = "the definition gives" if remote.sha256 else f"was recorded in {book.path.name}"
            raise CheckpointError(f"{path} has sha256 {digest[:16]}… but {expected[:16]}… {origin}; the file is "
                                  f"damaged or not the official one: delete it and fetch it again")
        reports.append(FileReport(remote.relpath, "verified", path.stat().st_size, digest))
    return reports


def _download_source(source: Source, folder: Path, book: ChecksumBook, progress: bool,
                     endpoint: str | None) -> list[FileReport]:
    files = source.files or _list_hub_folder(source, endpoint)
    staging_root = folder / STAGING
    try:
        if not source.folder:
            return [_download_file(files[0], folder / files[0].relpath, book, progress, endpoint, staging_root)]
        staging = staging_root / source.name
        reports = [_download_file(remote, staging / Path(remote.relpath).relative_to(source.name), book, progress,
                                  endpoint, staging_root) for remote in files]
        os.replace(staging, folder / source.name)
        return reports
    finally:
        _remove_empty(staging_root)


def _download_file(remote: RemoteFile, dest: Path, book: ChecksumBook, progress: bool, endpoint: str | None,
                   lock_dir: Path) -> FileReport:
    """Fetch one file to ``dest`` (its final name, or its place in a folder's staging area), verified."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f".{remote.relpath.replace('/', '__')}.lock")):
        expected = _expected(remote, book)
        if dest.exists():  # a member staged by an earlier, interrupted fetch of its folder
            digest = sha256_of(dest)
            if expected.sha256 in (None, digest):
                return FileReport(remote.relpath, "present", dest.stat().st_size, digest)
            dest.unlink()
        if remote.hub is not None:
            return _download_hub(remote, dest, book, progress, endpoint, expected)
        bar = _Bar(remote.relpath, progress)
        try:
            result = download_to_part(remote.url, dest, on_start=bar.start, on_chunk=bar.update)
        finally:
            bar.close()
        _accept(result.part, dest, result.sha256, result.size, expected, remote, book)
        return FileReport(remote.relpath, "downloaded", result.size, result.sha256, result.fetched,
                          result.resumed_from)


@dataclass(frozen=True)
class Expected:
    """The sha256 a download must have (None: record it), and where that value comes from."""

    sha256: str | None
    origin: str = "first download"
    says: str = ""


def _expected(remote: RemoteFile, book: ChecksumBook) -> Expected:
    """The definition's sha256, else the one recorded for the same URL, else none."""
    if remote.sha256:
        return Expected(remote.sha256, "definition", "the definition gives")
    entry = book.get(remote.relpath)
    if entry and entry.get("url") == remote.url and entry.get("sha256"):
        return Expected(entry["sha256"], entry.get("origin", "recorded"), f"was recorded in {book.path}")
    return Expected(None)


def _accept(part: Path, dest: Path, digest: str, size: int, expected: Expected, remote: RemoteFile,
            book: ChecksumBook) -> None:
    """Verify the received bytes and move them to the final name, or delete them and say why."""
    if expected.sha256 is not None and digest != expected.sha256:
        part.unlink(missing_ok=True)
        raise CheckpointError(
            f"the download of {remote.relpath} from {remote.url} has sha256 {digest[:16]}… but "
            f"{expected.sha256[:16]}… {expected.says}; the partial file was deleted: run the same command again, "
            f"and if it repeats the file changed upstream"
        )
    os.replace(part, dest)
    book.put(remote.relpath, digest, remote.url, size, expected.origin)


class _Bar:
    """A byte progress bar that appears once the size is known."""

    def __init__(self, desc: str, enabled: bool):
        self.desc, self.enabled, self.bar = desc, enabled, None

    def start(self, offset: int, total: int | None) -> None:
        self.close()
        self.bar = tqdm(total=total, initial=offset, desc=self.desc, unit="B", unit_scale=True, unit_divisor=1024,
                        disable=not self.enabled, leave=False)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _remove_empty(path: Path) -> None:
    """Delete the staging folder once nothing but lock files is left in it."""
    if not path.is_dir() or any(not p.name.endswith(".lock") for p in path.iterdir()):
        return
    with contextlib.suppress(OSError):
        for leftover in path.iterdir():
            leftover.unlink()
        path.rmdir()


def ensure_backbones(backbones: list[tuple[str, bool]], checkpoint: str | Path | None = None,
                     progress: bool = True) -> None:
    """``--download`` for ``run``: fetch the missing files of every (name, random_init) that needs weights.

    Files go into ``checkpoint`` when it is a folder (it is searched first), else the first checkpoint folder.
    """
    from tips_bench.backbones.spec import get_backbone_spec

    folder = Path(checkpoint).expanduser() if checkpoint and Path(checkpoint).expanduser().is_dir() else None
    for name, random_init in dict.fromkeys(backbones):
        if not random_init:
            ensure_files(get_backbone_spec(name), dir=folder, progress=progress, checkpoint=checkpoint)


# ---------------------------------------------------------------- Hugging Face hub


def _download_hub(remote: RemoteFile, dest: Path, book: ChecksumBook, progress: bool, endpoint: str | None,
                  expected: Expected) -> FileReport:
    """One hub file, checked against the definition, the record or the hub's own sha256, then moved to ``dest``."""
    assert remote.hub is not None
    base, what = hub_endpoint(endpoint), f"{remote.relpath} ({remote.url})"
    hub_hash = hub_sha256(remote.hub, what, base)
    if expected.sha256 is None and hub_hash is not None:
        expected = Expected(hub_hash, "hub", f"the hub lists for {remote.hub.repo_id}")
    part = part_path(dest)
    try:
        hub_download_to(remote.hub, what, part, base, progress)
        digest, size = sha256_of(part), part.stat().st_size
        _accept(part, dest, digest, size, expected, remote, book)
    finally:
        part.unlink(missing_ok=True)
    return FileReport(remote.relpath, "downloaded", size, digest, size)


def _list_hub_folder(source: Source, endpoint: str | None) -> tuple[RemoteFile, ...]:
    """The files of a hub folder URL that lists none (``.../tree/main/sub``)."""
    hub = source.listing
    assert hub is not None
    names = hub_listing(hub, f"{source.name} ({source.url})", hub_endpoint(endpoint))
    if not names:
        raise CheckpointError(f"the hub folder {source.url} has no files; check the URL in the definition")
    prefix = f"{hub.path}/" if hub.path else ""
    return tuple(RemoteFile(f"{source.name}/{n}", f"{source.url.rstrip('/')}/{n}",
                            HubRef(hub.repo_id, hub.repo_type, hub.revision, prefix + n)) for n in names)
