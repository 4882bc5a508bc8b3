"""
Checkpoints in out_dir/, written atomically and loadable with torch.load(..., weights_only=True):

    model.pt        {"model_args", "model", "tokenizer", "tokenizer_hash", "iter_num", "val_loss"}   small, shareable
    best_model.pt   the same, for the best validation loss so far
    train_state.pt  {"optimizer", "scaler", "rng", "sampler", "iter_num", "best_val_loss", "config"}  for resuming

Splitting the weights from the optimizer keeps the shareable file ~3x smaller (AdamW keeps two moments per weight)
and lets sampling, fine-tuning and export read only what they need.
"""

import os
from pathlib import Path

import torch

MODEL_FILE = "model.pt"
BEST_FILE = "best_model.pt"
STATE_FILE = "train_state.pt"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or not what was expected; str() is a one-line message for the user."""


def _fsync_dir(path):
    """Make a rename durable: the directory entry lives in the directory, not in the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call write(file_object) on a temp file next to path, fsync it, then rename it over path.

    A crash at any moment leaves either the old file or the new one, never a torn one: the temp file is in the same
    directory (so os.replace is an atomic rename on one file system) and is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_torch_save(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def strip_compile_prefix(state_dict):
    """torch.compile wraps the module as _orig_mod; checkpoints should not depend on whether it was on."""
    prefix = "_orig_mod."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def model_checkpoint(model, model_args, tokenizer, tokenizer_hash, iter_num, val_loss):
    """The dict stored in model.pt / best_model.pt."""
    return {
        "model_args": dict(model_args),
        "model": strip_compile_prefix(model.state_dict()),
        "tokenizer": tokenizer,
        "tokenizer_hash": tokenizer_hash,
        "iter_num": int(iter_num),
        "val_loss": None if val_loss is None else float(val_loss),
    }


def load(path, map_location="cpu"):
    """torch.load(weights_only=True) with one-line errors for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: train a model first (python train.py ...) "
                              f"or pass --out_dir/--ckpt pointing to one")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's own message is a page long and suggests weights_only=False: not for us
        raise CheckpointError(f"checkpoint {path} is corrupt or not a solGPT checkpoint (torch.load failed: "
                              f"{type(e).__name__}); retrain, or use an intact copy") from None


def load_model_checkpoint(path, map_location="cpu"):
    ckpt = load(path, map_location)
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {path} holds no model weights (expected keys model_args, model); "
                              f"pass a model.pt or best_model.pt")
    return ckpt


def load_model(path, device="cpu"):
    """Build a GPT from a weights file: returns (model in eval mode on device, checkpoint dict)."""
    from model import GPT, GPTConfig  # local import: checkpoint.py itself needs no model code

    ckpt = load_model_checkpoint(path, map_location=device)
    model = GPT(GPTConfig.from_dict(ckpt["model_args"]))
    try:
        model.load_state_dict(strip_compile_prefix(ckpt["model"]))
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not match its model_args "
                              f"({str(e).splitlines()[0][:200]})") from None
    return model.to(device).eval(), ckpt
