"""Find the checkpoint files a user downloaded: ``--checkpoint``, env var, config file.

Search order for a file of role ``r`` (``vision``, ``text``, ``tokenizer``, ``model``):

1. ``--checkpoint PATH``: if PATH is a file, it is the main weights file (``vision`` or
   ``model``); the other roles are looked up beside it. If PATH is a folder, it is searched
   for the official file names.
2. Every folder in ``$TIPS_BENCH_CHECKPOINTS`` (``os.pathsep``-separated).
3. ``checkpoint_dirs`` in the config file ``$TIPS_BENCH_CONFIG`` (default
   ``~/.config/tips-bench/config.yaml``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml

from tips_bench.backbones.spec import BackboneSpec
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
        except yaml.YAMLError as exc:
            raise TipsBenchError(f"config file {cfg} is not valid YAML ({exc}); fix it") from exc
        dirs += [Path(p).expanduser() for p in data.get("checkpoint_dirs", []) or []]
    return dirs


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
        return dirs + configured_dirs()

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
        where = ", ".join(str(d) for d in self.search_dirs()) or "no folder (none configured)"
        raise CheckpointError(
            f"{self.spec.name} needs its {role} file {name}, not found in {where}; download it from {url} "
            f"and pass --checkpoint FILE_OR_DIR or add its folder to $TIPS_BENCH_CHECKPOINTS"
        )

    def status(self) -> dict[str, bool]:
        """Which roles are present (for ``tips-bench backbones``)."""
        return {role: self.find(role) is not None for role in self.spec.checkpoint_files}


def file_hash(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file (first 16 hex chars), cached next to nothing: large files take a while."""
    digest = hashlib.sha256()
    target = path if path.is_file() else None
    if target is None:  # a tokenizer folder: hash its files in name order
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(sub.name.encode())
            digest.update(sub.read_bytes())
        return digest.hexdigest()[:16]
    with open(target, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]
