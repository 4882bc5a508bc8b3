"""
Checkpoints in out_dir/, written atomically and loadable with torch.load(..., weights_only=True):

    model.pt        {"model_args", "model", "tokenizer", "tokenizer_hash", "iter_num", "val_loss"}   small, shareable
    best_model.pt   the same, for the best validation loss so far
    train_state.pt  everything resuming needs, in one file: model.pt's keys except val_loss, plus
                    {"optimizer", "scaler", "rng", "sampler", "best_val_loss", "evaluated", "config"}

Resume reads train_state.pt alone, so no crash between two writes can pair weights with another iteration's
optimizer. model.pt stays separate: ~3x smaller (AdamW keeps two moments per weight), it is what sampling,
fine-tuning and export read and what people share.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import atomic_write  # noqa: E402,F401  (re-exported: checkpoint.atomic_write)

MODEL_KEYS = ("model_args", "model")
STATE_KEYS = ("model_args", "model", "tokenizer", "tokenizer_hash", "optimizer", "scaler", "rng", "sampler",
              "iter_num", "best_val_loss", "evaluated", "config")
MODEL_FILE = "model.pt"
BEST_FILE = "best_model.pt"
STATE_FILE = "train_state.pt"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or not what was expected; str() is a one-line message for the user."""


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
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in MODEL_KEYS):
        raise CheckpointError(f"checkpoint {path} holds no model weights (expected keys model_args, model); "
                              f"pass a model.pt or best_model.pt")
    return ckpt


def load_train_state(path, map_location="cpu"):
    """train_state.pt, checked to hold every key resuming needs."""
    state = load(path, map_location)
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a complete training state (missing {', '.join(missing)}); it was "
                              f"written by another version: start again with --init_from=scratch")
    return state


def load_model(path, device="cpu"):
    """Build a GPT from a weights file: returns (model in eval mode on device, checkpoint dict)."""
    from model import GPT, GPTConfig  # local import: checkpoint.py itself needs no model code

    ckpt = load_model_checkpoint(path, map_location=device)
    try:
        model = GPT(GPTConfig.from_dict(ckpt["model_args"]))
        model.load_state_dict(strip_compile_prefix(ckpt["model"]))
    except (RuntimeError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not match its model_args "
                              f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    return model.to(device).eval(), ckpt
