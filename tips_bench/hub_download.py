"""Files on the Hugging Face hub through ``huggingface_hub``: their sha256, a download to a given path, a listing.

The endpoint is ``endpoint=``, else ``$HF_ENDPOINT`` read at call time (huggingface_hub reads it once at
import), else https://huggingface.co. Every huggingface_hub or HTTP-client error becomes one
CheckpointError sentence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from tips_bench.download_sources import SHA256, HubRef
from tips_bench.errors import CheckpointError, TipsBenchError

_NETWORK_MODULES = ("httpx", "httpx2", "requests", "urllib3", "httpcore")


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``$HF_ENDPOINT``, else https://huggingface.co."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_sha256(hub: HubRef, what: str, base: str) -> str | None:
    """The hub's sha256 of a file (the LFS object id; None for small git files); raises for a missing file."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    with hub_errors(what, base):
        meta = get_hf_file_metadata(hf_hub_url(hub.repo_id, hub.path, repo_type=hub.repo_type,
                                               revision=hub.revision, endpoint=base), endpoint=base)
    return meta.etag if meta.etag and SHA256.fullmatch(meta.etag) else None


def hub_download_to(hub: HubRef, what: str, target: Path, base: str, progress: bool) -> None:
    """Download one hub file to ``target`` with ``hf_hub_download`` (via a private staging folder beside it)."""
    from huggingface_hub import hf_hub_download

    staging = target.parent / f".{target.name}.hub"
    try:
        with hub_errors(what, base):
            got = hf_hub_download(hub.repo_id, hub.path, repo_type=hub.repo_type, revision=hub.revision,
                                  local_dir=staging, endpoint=base, tqdm_class=tqdm if progress else _Quiet)
        os.replace(got, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def hub_listing(hub: HubRef, what: str, base: str) -> list[str]:
    """Paths (relative to ``hub.path``) of the files in a hub folder, sorted; .gitattributes left out."""
    from huggingface_hub import HfApi

    with hub_errors(what, base):
        names = HfApi(endpoint=base).list_repo_files(hub.repo_id, repo_type=hub.repo_type, revision=hub.revision)
    prefix = f"{hub.path}/" if hub.path else ""
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix) and not n.endswith(".gitattributes"))


class _Quiet(tqdm):
    """tqdm that never draws (``progress=False``)."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def hub_errors(what: str, base: str) -> Iterator[None]:
    """Turn huggingface_hub's exceptions about ``what`` into one sentence."""
    from huggingface_hub import errors as hf_errors

    try:
        yield
    except TipsBenchError:
        raise
    except hf_errors.GatedRepoError:
        raise CheckpointError(f"the hub repository of {what} is gated; accept its licence on the hub, log in with "
                              f"'hf auth login' and fetch again") from None
    except hf_errors.RepositoryNotFoundError:
        raise CheckpointError(f"the hub at {base} has no repository for {what} (or it is private); check the URL "
                              f"in the definition") from None
    except hf_errors.RevisionNotFoundError:
        raise CheckpointError(f"the hub at {base} has no such revision for {what}; check the URL in the "
                              f"definition") from None
    except hf_errors.EntryNotFoundError:
        raise CheckpointError(f"the hub at {base} answered 404 Not Found for {what}; check the URL in the "
                              f"definition (tips-bench backbones -v)") from None
    except hf_errors.OfflineModeIsEnabled:
        raise CheckpointError(f"{what} is missing and huggingface_hub is in offline mode ($HF_HUB_OFFLINE); "
                              f"allow the network or place the file yourself") from None
    except hf_errors.LocalEntryNotFoundError as exc:
        raise CheckpointError(f"could not download {what}: no connection to {base} ({_short(exc)}); check the "
                              f"network, or use --offline with the files already in place") from None
    except hf_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        raise CheckpointError(f"the hub at {base} answered {status} for {what}; try again later") from None
    except Exception as exc:  # the HTTP client's own errors (httpx or requests, by hub version)
        if type(exc).__module__.split(".")[0] not in _NETWORK_MODULES and not isinstance(exc, OSError):
            raise
        if isinstance(exc, ConnectionError) or "Connect" in type(exc).__name__:
            raise CheckpointError(f"could not download {what}: no connection to {base} ({_short(exc)}); check the "
                                  f"network, or use --offline with the files already in place") from None
        raise CheckpointError(f"the download of {what} from {base} failed ({_short(exc)}); run the same command "
                              f"again") from None


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]
