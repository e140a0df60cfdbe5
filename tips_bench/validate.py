"""Checks run before any work: option values, output paths, devices and checkpoint files.

Every check raises a ``TipsBenchError`` whose message is one sentence saying what is wrong and how to fix it, so
that bad input fails fast, with exit status 2, before anything is computed or written.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import zipfile
from pathlib import Path

from tips_bench.errors import CheckpointError, InputError


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer (use 1 or more)")
    return value


def nonnegative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative (use 0 or more)")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive finite number")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among the parents of ``path`` (which make it impossible to create)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """A file that will be written (or replaced): not a folder, its folder creatable and writable."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder; name a file (e.g. {p / 'out'}{p.suffix or ''})")
    _check_parent(p, what)
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"{what} {p} is not writable; fix its permissions or name another file")
    return p


def check_output_dir(path: str | os.PathLike[str], what: str) -> Path:
    """A folder that will be created (or written into): not a file, creatable and writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{what} {p} is a file, not a folder; name a folder (new or existing)")
    _check_parent(p, what)
    if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p} is not writable; fix its permissions or name another folder")
    return p


def _check_parent(p: Path, what: str) -> None:
    blocker = _blocking_file(p)
    if blocker is not None:
        raise InputError(f"{what} {p} cannot be created because {blocker} is a file, not a folder; name another "
                         "path")
    existing = next((q for q in p.parents if q.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p} cannot be created because {existing} is not writable; name another path")


def check_input_dir(path: str | os.PathLike[str], what: str) -> Path:
    """An existing folder to read."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} {p} does not exist; pass an existing folder")
    if not p.is_dir():
        raise InputError(f"{what} {p} is a file, not a folder; pass the folder that holds the data")
    return p


def check_device(device: str) -> str:
    """A torch device this machine has: 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise InputError(f"--device {device} is not supported; use cpu, cuda, cuda:N or mps")
    return device


#: Checkpoints at most this large are read in full before a run (cheap), larger ones only have their header sniffed.
FULL_CHECK_BYTES = 256 * 2**20


def check_checkpoint_file(path: Path, expected: str) -> None:
    """Sniff a checkpoint file's format from its first bytes and its suffix: one sentence for an empty, foreign,
    truncated or damaged file, naming the file, what it looks like and what was expected."""
    if path.is_dir():
        return
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); expected {expected}, download it again")
    with open(path, "rb") as fh:
        head = fh.read(16)
    suffix = path.suffix.lower()
    looks = _looks_like(head)
    if suffix == ".npz":
        if not head.startswith(b"PK"):
            raise CheckpointError(f"checkpoint {path} looks like {looks}, not a NumPy .npz archive; expected "
                                  f"{expected}")
        names = _zip_names(path, ".npz archive", expected)
        if not names or not all(n.endswith(".npy") for n in names):
            raise CheckpointError(f"checkpoint {path} is a zip archive without NumPy arrays (it holds "
                                  f"{', '.join(names[:3]) or 'nothing'}); expected {expected}")
    elif suffix == ".safetensors":
        with open(path, "rb") as fh:
            raw = fh.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
            ok = 2 <= n <= min(size - 8, 100 * 2**20)
            try:
                header = json.loads(fh.read(n)) if ok else None
            except (ValueError, UnicodeDecodeError):
                header = None
        if not isinstance(header, dict):
            raise CheckpointError(f"checkpoint {path} looks like {looks}, not a safetensors file (no valid "
                                  f"header); expected {expected}, download it again")
    elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
        if head.startswith(b"PK"):
            names = _zip_names(path, "PyTorch archive", expected)
            if not any(n.endswith(("data.pkl", "constants.pkl")) for n in names):
                raise CheckpointError(f"checkpoint {path} is a zip archive but not a PyTorch file (no data.pkl); "
                                      f"expected {expected}")
        elif not head.startswith(b"\x80"):
            raise CheckpointError(f"checkpoint {path} looks like {looks}, not a PyTorch file; expected {expected}")
    if size <= FULL_CHECK_BYTES:
        from tips_bench.backbones.formats import describe_state_dict, guess_family, read_state_dict

        sd = read_state_dict(path)
        if not sd:
            raise CheckpointError(f"checkpoint {path} holds no tensors; expected {expected}")
        if guess_family(sd) == "unknown":
            raise CheckpointError(f"checkpoint {path} is {describe_state_dict(sd)}; expected {expected}")


def _zip_names(path: Path, kind: str, expected: str) -> list[str]:
    """The member names of a zip-based checkpoint, or one sentence when the archive is truncated or damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is a truncated or damaged {kind} ({exc}); expected {expected}, "
                              "download it again") from None


def _looks_like(head: bytes) -> str:
    if head.startswith(b"PK"):
        return "a zip archive"
    if head.startswith(b"\x80"):
        return "a Python pickle"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8"):
        return "an image"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data of an unknown format"


def check_backbone_files(name: str, random_init: bool, checkpoint: str | None) -> None:
    """Before a run: the backbone's main checkpoint file exists and reads as a checkpoint (weights-free and
    random-init backbones need none). Catches foreign or damaged files before any work or cache write."""
    from tips_bench.backbones.checkpoints import MAIN_ROLES, WEIGHTLESS_FAMILIES, CheckpointFiles
    from tips_bench.backbones.spec import get_backbone_spec

    spec = get_backbone_spec(name)
    if random_init or spec.family in WEIGHTLESS_FAMILIES or not spec.checkpoint_files:
        return
    files = CheckpointFiles(spec, checkpoint)
    role = next((r for r in MAIN_ROLES if r in spec.checkpoint_files), next(iter(spec.checkpoint_files)))
    path = files.require(role)
    check_checkpoint_file(path, f"the {role} weights of {spec.name} ({spec.checkpoint_files[role]})")
