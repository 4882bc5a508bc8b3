"""Shared Hugging Face loading for the prepare scripts: streaming, tokens, gated datasets, one-line errors.

Every prepare.py loads through `load_streaming()`, the same `datasets.load_dataset(..., streaming=True)` call for the
Hub and for a local directory laid out like the Hub repo (`--local_path`, which the tests use), so that the tested
path is the real one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from data.corpus import PrepareError

TOKEN_HELP = "run `huggingface-cli login` (or `hf auth login`) or set HF_TOKEN to a token from https://huggingface.co/settings/tokens"


def hf_token() -> str | None:
    """The user's Hugging Face token (HF_TOKEN or the cached login), or None."""
    from huggingface_hub import get_token
    return get_token()


def gated_message(repo_id: str, has_token: bool) -> str:
    page = f"https://huggingface.co/datasets/{repo_id}"
    if not has_token:
        return (f"{repo_id} is gated on the Hugging Face Hub and needs a token: {TOKEN_HELP}, "
                f"and accept the dataset's terms at {page}")
    return (f"{repo_id} is gated on the Hugging Face Hub and your token has no access: accept the dataset's "
            f"terms at {page} (logged in as the token's user), then rerun")


def _causes(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _access_refusal(e: BaseException) -> str | None:
    """'unauthorized' (HTTP 401: no valid token), 'gated' (the repo is gated and the token has no access) or None.

    Only real signals count: the Hub client's error classes and HTTP status, or the wording `datasets` uses when it
    re-raises them; never a word like "gated" anywhere in a message ("propagated", "aggregated")."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError
    for c in _causes(e):
        status = getattr(getattr(c, "response", None), "status_code", None)
        if isinstance(c, HfHubHTTPError) and status == 401:
            return "unauthorized"
        if isinstance(c, GatedRepoError):
            return "gated"
        msg = str(c)
        if type(c).__name__ == "DatasetNotFoundError" and "is a gated dataset on the Hub" in msg:
            return "unauthorized" if "must be authenticated" in msg else "gated"
    return None


def _is_offline(e: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled
    return any(isinstance(c, (ConnectionError, OfflineModeIsEnabled, TimeoutError)) or "Couldn't reach" in str(c)
               for c in _causes(e))


def translate(e: BaseException, repo_id: str) -> PrepareError:
    """A load or streaming failure as the one-line error a user can act on."""
    refusal = _access_refusal(e)
    if refusal == "unauthorized":
        has = hf_token() is not None
        return PrepareError(f"the Hugging Face Hub refused {'your token' if has else 'access without a token'} for "
                            f"{repo_id} (401 Unauthorized): {'the token is invalid or expired; ' if has else ''}"
                            f"{TOKEN_HELP}")
    if refusal == "gated":
        return PrepareError(gated_message(repo_id, hf_token() is not None))
    if _is_offline(e):
        return PrepareError(f"could not reach the Hugging Face Hub for {repo_id} ({type(e).__name__}): check the "
                            f"network (HF_HUB_OFFLINE must be unset), or pass --local_path to a downloaded copy")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return PrepareError(f"could not load {repo_id}: {first}")


def load_streaming(repo_id: str, *, local_path: Path | None = None, gated: bool = False, **kwargs):
    """datasets.load_dataset(repo_id or local_path, streaming=True, **kwargs) with one-line errors.

    A gated repo without a token stops here, before any network access, with what to do.
    """
    from datasets import load_dataset
    from huggingface_hub.utils import logging as hub_logging

    # The hub client logs every retry of an unreachable host as a warning; our one-line error below says it all.
    hub_logging.set_verbosity_error()
    if local_path is not None:
        if not Path(local_path).is_dir():
            raise PrepareError(f"--local_path {local_path} is not a directory")
        path, token = str(local_path), None
    else:
        token = hf_token()
        if gated and token is None:
            raise PrepareError(gated_message(repo_id, has_token=False))
        path = repo_id
    try:
        return load_dataset(path, streaming=True, token=token, **kwargs)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line; the cause names itself
        raise translate(e, repo_id) from e


def iter_split(ds, split: str, repo_id: str) -> Iterator[dict]:
    """Rows of one split; streaming fetches lazily, so errors can surface here too."""
    try:
        yield from ds[split]
    except Exception as e:  # noqa: BLE001
        raise translate(e, repo_id) from e


def ordered_splits(ds, preferred=("train", "validation", "eval", "test")) -> list[str]:
    """The dataset's splits, known names first, so the input order (and the output) is deterministic."""
    names = list(ds.keys())
    return [s for s in preferred if s in names] + sorted(s for s in names if s not in preferred)


def add_hub_args(p, val_fraction: float):
    """Options the Hugging Face prepare scripts share."""
    p.add_argument("--local_path", type=Path, default=None,
                   help="load from this directory (laid out like the Hub repo) instead of the Hub")
    p.add_argument("--val_fraction", type=float, default=val_fraction,
                   help="share of groups (hash of the group name) that go to val")
    p.add_argument("--max_docs", type=int, default=None, help="stop after this many input documents (quick tries)")


def check_hub_args(args):
    if not 0 < args.val_fraction < 1:
        raise PrepareError(f"--val_fraction must be in (0, 1), got {args.val_fraction}")
    if args.max_docs is not None and args.max_docs < 1:
        raise PrepareError(f"--max_docs must be positive, got {args.max_docs}")


def source_info(repo_id: str, local_path: Path | None, **kw) -> dict:
    """What meta.json's sources and the fingerprint record: the repo, and for a local copy its files' sizes/times."""
    info = {"hub": repo_id, **kw}
    if local_path is not None:
        files = sorted(p for p in Path(local_path).rglob("*") if p.is_file())
        info["local_path"] = str(Path(local_path).resolve())
        info["local_files"] = [[str(p.relative_to(local_path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return info
