"""What to fetch for a backbone: its definition's ``checkpoint: files/urls/sha256`` turned into concrete files.

Each URL is one of:

- ``https://huggingface.co/<repo>/resolve/<revision>/<path>``: one file on the Hugging Face hub;
- ``https://huggingface.co/<repo>/tree/<revision>[/<folder>] (a, b, c)``: a folder of the listed files
  (all files of the hub folder when no list is given), saved under the role's folder name;
- ``hf-hub:<org>/<repo>[@<revision>][/<path>]`` (the timm / open_clip way of naming a hub release):
  ``<path>`` in that repository, by default the definition's file name;
- any other http(s) URL: one file; a URL ending in ``/`` names a folder, and the file is the
  definition's file name inside it (or the listed files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tips_bench.backbones.spec import BackboneSpec
from tips_bench.errors import CheckpointError

HF_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
SHA256 = re.compile(r"[0-9a-f]{64}")
_LISTED = re.compile(r"^(?P<url>\S+)\s*(?:\((?P<list>[^()]*)\))?\s*$")


@dataclass(frozen=True)
class HubRef:
    """A path in a Hugging Face hub repository."""

    repo_id: str
    repo_type: str
    revision: str
    path: str


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where it goes under the checkpoint folder and where it comes from."""

    relpath: str
    url: str
    hub: HubRef | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """The file or folder of one role (``vision``, ``text``, ``tokenizer``, ``model``)."""

    role: str
    name: str
    url: str
    folder: bool
    files: tuple[RemoteFile, ...]
    listing: HubRef | None = None  # a hub folder whose files are listed at fetch time


def is_generic(spec: BackboneSpec) -> bool:
    """True for loaders of any checkpoint of a family (``tips``, ``openclip``): no single official file."""
    return any(value is None for value in spec.architecture.values())


def sources(spec: BackboneSpec) -> list[Source]:
    """The download sources of every role in a definition; CheckpointError when one cannot be fetched."""
    if is_generic(spec):
        raise CheckpointError(
            f"{spec.name} loads any checkpoint of its family, so it has no official file to fetch; fetch a named "
            f"variant (see 'tips-bench backbones') or download the file yourself and pass --checkpoint"
        )
    if spec.checkpoint_bundled:  # shipped with the package: nothing to download
        return []
    declared = (spec.raw.get("checkpoint") or {}).get("sha256") or {}
    return [_source(spec, role, name, declared.get(role)) for role, name in spec.checkpoint_files.items()]


def _source(spec: BackboneSpec, role: str, name: str, declared) -> Source:
    text = (spec.checkpoint_urls.get(role) or "").strip()
    match = _LISTED.match(text)
    if not text or not match or not urlsplit(match["url"]).scheme:
        raise CheckpointError(f"{spec.name} gives no download URL for its {role} file {name} ({text or 'none'}); "
                              f"download it yourself and pass --checkpoint")
    url, listed = match["url"], match["list"]
    members = tuple(m.strip() for m in (listed or "").split(",") if m.strip())
    if listed is not None and (not members or any(" " in m or m in (".", "..") for m in members)):
        raise CheckpointError(f"{spec.name}: the {role} URL '{text}' does not name files to fetch; "
                              f"download them yourself and pass --checkpoint")
    sha = _declared_hashes(spec, role, declared, members)
    if url.startswith("hf-hub:"):
        return _timm_hub_source(spec, role, name, url, members, sha)
    host = urlsplit(url).hostname or ""
    if host in HF_HOSTS:
        return _hub_source(spec, role, name, url, members, sha)
    if url.endswith("/"):
        if members:
            files = tuple(RemoteFile(f"{name}/{m}", url + m, sha256=sha.get(m)) for m in members)
            return Source(role, name, url, True, files)
        return Source(role, name, url, False, (RemoteFile(name, url + name, sha256=sha.get("")),))
    if members:
        raise CheckpointError(f"{spec.name}: the {role} URL {url} lists files but is not a folder (end it with '/')")
    return Source(role, name, url, False, (RemoteFile(name, url, sha256=sha.get("")),))


def _declared_hashes(spec: BackboneSpec, role: str, declared, members: tuple[str, ...]) -> dict[str, str]:
    """Definition hashes: '' -> hex for a file, member -> hex for a folder."""
    if declared is None:
        return {}
    table = declared if isinstance(declared, dict) else {"": declared}
    out = {}
    for key, value in table.items():
        hex_ = str(value).strip().lower()
        if not SHA256.fullmatch(hex_):
            raise CheckpointError(f"{spec.path or spec.name}: checkpoint sha256 of {role} '{value}' is not 64 hex "
                                  f"digits; fix the definition")
        out[str(key) if isinstance(declared, dict) else ""] = hex_
    if members and "" in out:
        raise CheckpointError(f"{spec.path or spec.name}: the {role} role is a folder; give its sha256 per file")
    return out


def _hub_source(spec: BackboneSpec, role: str, name: str, url: str, members: tuple[str, ...],
                sha: dict[str, str]) -> Source:
    parts = [p for p in urlsplit(url).path.split("/") if p]
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = parts[0][:-1], parts[1:]
    if len(parts) < 4 or parts[2] not in ("resolve", "blob", "tree"):
        raise CheckpointError(f"{spec.name}: the {role} URL {url} names no file of a hub repository "
                              f"(expected huggingface.co/<org>/<repo>/resolve/<revision>/<file>); "
                              f"download it yourself and pass --checkpoint")
    repo_id, action, revision, path = "/".join(parts[:2]), parts[2], parts[3], "/".join(parts[4:])
    if action in ("resolve", "blob") and not members:
        return Source(role, name, url, False,
                      (RemoteFile(name, url, HubRef(repo_id, repo_type, revision, path), sha.get("")),))
    prefix = f"{path}/" if path else ""
    if members:
        files = tuple(RemoteFile(f"{name}/{m}", f"{url.rstrip('/')}/{m}",
                                 HubRef(repo_id, repo_type, revision, prefix + m), sha.get(m)) for m in members)
        return Source(role, name, url, True, files)
    return Source(role, name, url, True, (), listing=HubRef(repo_id, repo_type, revision, path))


def _timm_hub_source(spec: BackboneSpec, role: str, name: str, url: str, members: tuple[str, ...],
                     sha: dict[str, str]) -> Source:
    """``hf-hub:org/repo[@rev][/path]`` as a hub file (or, with a list, a folder of listed files)."""
    parts = url[len("hf-hub:"):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise CheckpointError(f"{spec.name}: the {role} URL {url} is not hf-hub:<org>/<repo>[/<file>]")
    repo, _, revision = parts[1].partition("@")
    repo_id, path = f"{parts[0]}/{repo}", "/".join(parts[2:])
    web = f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/"
    if members:
        prefix = f"{path}/" if path else ""
        files = tuple(RemoteFile(f"{name}/{m}", web + prefix + m, HubRef(repo_id, "model", revision or "main",
                                                                         prefix + m), sha.get(m)) for m in members)
        return Source(role, name, url, True, files)
    target = path or name
    return Source(role, name, url, False,
                  (RemoteFile(name, web + target, HubRef(repo_id, "model", revision or "main", target),
                              sha.get("")),))
