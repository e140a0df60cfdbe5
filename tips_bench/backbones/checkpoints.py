"""Find the checkpoint files a user downloaded: ``--checkpoint``, env var, config file.

Search order for a file of role ``r`` (``vision``, ``text``, ``tokenizer``, ``model``):

1. ``--checkpoint PATH``: if PATH is a file, it is the main weights file (``vision`` or
   ``model``); the other roles are looked up beside it. If PATH is a folder, it is searched
   for the official file names.
2. Every folder in ``$TIPS_BENCH_CHECKPOINTS`` (``os.pathsep``-separated).
3. ``checkpoint_dirs`` in the config file ``$TIPS_BENCH_CONFIG`` (default
   ``~/.config/tips-bench/config.yaml``).
4. For definitions that declare ``checkpoint: {bundled: SUBDIR}``, the files shipped with the
   package: ``checkpoints/SUBDIR`` of a source checkout, ``tips_bench/_defs/checkpoints/SUBDIR``
   of an installed wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import yaml

from tips_bench.backbones.spec import BackboneSpec
from tips_bench.cache import default_cache_dir
from tips_bench.errors import CheckpointError, TipsBenchError

MAIN_ROLES = ("vision", "model")


def config_path() -> Path:
    """Where the user config file lives."""
    return Path(os.environ.get("TIPS_BENCH_CONFIG", "~/.config/tips-bench/config.yaml")).expanduser()


def configured_dirs() -> list[Path]:
    """Checkpoint folders from the environment and the config file, in search order."""
    dirs = [Path(p).expanduser() for p in os.environ.get("TIPS_BENCH_CHECKPOINTS", "").split(os.pathsep) if p]
    cfg = config_path()
    if cfg.is_file():
        try:
            data = yaml.safe_load(cfg.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TipsBenchError(f"config file {cfg} is not valid YAML ({exc}); fix it") from exc
        except OSError as exc:
            raise TipsBenchError(f"cannot read the config file {cfg} ({exc.strerror}); fix its permissions or "
                                 "point $TIPS_BENCH_CONFIG elsewhere") from exc
        if not isinstance(data, dict):
            raise TipsBenchError(f"config file {cfg} holds a {type(data).__name__}, not a mapping; write it as "
                                 "'checkpoint_dirs: [FOLDER, ...]'")
        folders = data.get("checkpoint_dirs") or []
        if isinstance(folders, str):
            folders = [folders]
        if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
            raise TipsBenchError(f"config file {cfg}: checkpoint_dirs is {folders!r}, not a list of folder names; "
                                 "write it as 'checkpoint_dirs: [FOLDER, ...]'")
        dirs += [Path(p).expanduser() for p in folders]
    return dirs


def bundled_root() -> Path:
    """Where shipped checkpoints live: inside the wheel, or ``checkpoints/`` of a source checkout."""
    packaged = resources.files("tips_bench") / "_defs" / "checkpoints"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "checkpoints"


def bundled_dir(spec: BackboneSpec) -> Path | None:
    """The folder of a definition's shipped files, or None when it declares none."""
    return bundled_root() / spec.checkpoint_bundled if spec.checkpoint_bundled else None


class CheckpointFiles:
    """Resolves the files of one backbone; missing files raise when asked for, not before."""

    def __init__(self, spec: BackboneSpec, checkpoint: str | Path | None = None):
        self.spec = spec
        self.explicit = Path(checkpoint).expanduser() if checkpoint else None
        if self.explicit is not None and not self.explicit.exists():
            raise CheckpointError(f"--checkpoint {self.explicit} does not exist; pass the downloaded file or folder")

    def search_dirs(self) -> list[Path]:
        dirs: list[Path] = []
        if self.explicit is not None:
            dirs.append(self.explicit if self.explicit.is_dir() else self.explicit.parent)
        dirs += configured_dirs()
        shipped = bundled_dir(self.spec)
        if shipped is not None and shipped.is_dir():
            dirs.append(shipped)
        return dirs

    def find(self, role: str) -> Path | None:
        """The file for a role, or None when it is not found anywhere."""
        if self.explicit is not None and self.explicit.is_file() and role in MAIN_ROLES:
            return self.explicit
        name = self.spec.checkpoint_files.get(role)
        if not name:
            return None
        for folder in self.search_dirs():
            candidate = folder / name
            if candidate.exists():
                return candidate
        if role == "tokenizer" and self.explicit is not None and self.explicit.is_file():
            # A TIPS tokenizer is shared by every size: accept any *.model beside the weights.
            models = sorted(self.explicit.parent.glob("*.model"))
            if len(models) == 1:
                return models[0]
        if role == "text" and self.explicit is not None and self.explicit.is_file():
            sibling = self.explicit.with_name(self.explicit.name.replace("_vision.npz", "_text.npz"))
            if sibling != self.explicit and sibling.exists():
                return sibling
        return None

    def require(self, role: str) -> Path:
        """The file for a role, or a CheckpointError naming it, where it was looked for, and its URL."""
        found = self.find(role)
        if found is not None:
            return found
        name = self.spec.checkpoint_files.get(role, f"<{role} file>")
        url = self.spec.checkpoint_urls.get(role, "")
        dirs = self.search_dirs()
        where = f"in {', '.join(str(d) for d in dirs)}" if dirs else "(no checkpoint folder is configured)"
        raise CheckpointError(
            f"{self.spec.name} needs its {role} file {name}, not found {where}; fetch it with 'tips-bench fetch "
            f"{self.spec.name}' (or add --download), or download it from {url} and pass --checkpoint FILE_OR_DIR "
            f"or add its folder to $TIPS_BENCH_CHECKPOINTS"
        )

    def status(self) -> dict[str, bool]:
        """Which roles are present (for ``tips-bench backbones``)."""
        return {role: self.find(role) is not None for role in self.spec.checkpoint_files}


def file_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 (first 16 hex chars) of a file, or of a folder's files in name order (tokenizer folders)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(sub.name.encode())
            digest.update(sub.read_bytes())
        return digest.hexdigest()[:16]
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def memo_file_hash(path: Path) -> str:
    """``file_hash`` remembered per (path, size, mtime) in this process and in the user cache folder."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _HASH_MEMO:
        return _HASH_MEMO[key]
    memo_file = default_cache_dir() / "hashes.json"
    try:
        stored = json.loads(memo_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        stored = {}
    name = f"{key[0]}|{key[1]}|{key[2]}"
    if name not in stored:
        stored[name] = file_hash(path)
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(stored))
            os.replace(tmp, memo_file)
        except OSError:
            pass
    _HASH_MEMO[key] = stored[name]
    return stored[name]


#: Families whose backbones have no weights (their definition's version identifies them).
WEIGHTLESS_FAMILIES = ("pixels", "oracle")


def weights_identity(spec: BackboneSpec, checkpoint: str | Path | None, random_init: bool, seed: int,
                     overrides: dict | None = None) -> str:
    """A string that changes whenever the weights would: file hashes, or the random-init seed."""
    options = ",".join(f"{k}={v}" for k, v in sorted((overrides or {}).items()) if v)
    extra = f"|{options}" if options else ""  # unset options leave the identity as it is
    if spec.family in WEIGHTLESS_FAMILIES:
        return f"{spec.family}:v{spec.version}" + extra
    if random_init:
        return f"random-init:{spec.name}:{seed}" + extra
    files = CheckpointFiles(spec, checkpoint)
    main_role = "vision" if "vision" in spec.checkpoint_files else "model"
    parts = [f"{main_role}={memo_file_hash(files.require(main_role))}"]
    for role in spec.checkpoint_files:
        found = files.find(role) if role != main_role else None
        if found is not None:
            parts.append(f"{role}={memo_file_hash(found)}")
    return ";".join(parts) + extra
