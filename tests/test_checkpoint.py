"""checkpoint.py: atomic writes survive a crash mid-save; everything loads with weights_only=True."""

import os

import pytest
import torch

import checkpoint as ckpt_io
from model import GPT, GPTConfig

ARGS = dict(block_size=8, vocab_size=32, n_layer=1, n_head=1, n_embd=8, dropout=0.0, bias=False, pos_encoding="learned")


def small_checkpoint(seed):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**ARGS))
    return model, ckpt_io.model_checkpoint(model, ARGS, "solgpt", "ab" * 32, seed, 1.5)


def test_model_checkpoint_round_trip_weights_only(tmp_path):
    model, ck = small_checkpoint(1)
    ckpt_io.atomic_torch_save(ck, tmp_path / "model.pt")
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["tokenizer"] == "solgpt" and raw["iter_num"] == 1 and raw["model_args"] == ARGS
    loaded, _ = ckpt_io.load_model(tmp_path / "model.pt")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not loaded.training


def test_compiled_prefix_is_stripped():
    sd = {"_orig_mod.lm_head.weight": torch.zeros(1), "x": torch.ones(1)}
    assert set(ckpt_io.strip_compile_prefix(sd)) == {"lm_head.weight", "x"}


@pytest.mark.parametrize("fail_in", ["torch.save", "os.replace"])
def test_crash_mid_save_keeps_previous_file(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "model.pt"
    _, old = small_checkpoint(1)
    ckpt_io.atomic_torch_save(old, path)
    _, new = small_checkpoint(2)

    def torn_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")  # the first bytes hit the disk, then the process dies
        raise KeyboardInterrupt("killed mid-save")

    def failing_replace(*a, **k):
        raise OSError("disk gone")

    if fail_in == "torch.save":
        monkeypatch.setattr(torch, "save", torn_save)
    else:
        monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises((KeyboardInterrupt, OSError)):
        ckpt_io.atomic_torch_save(new, path)
    monkeypatch.undo()
    survived = torch.load(path, weights_only=True)
    assert survived["iter_num"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind


def test_one_line_errors_for_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(ckpt_io.CheckpointError, match="not found"):
        ckpt_io.load_model(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError, match="corrupt") as exc:
        ckpt_io.load_model(tmp_path / "bad.pt")
    assert "\n" not in str(exc.value)
    torch.save({"optimizer": {}}, tmp_path / "state.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="no model weights"):
        ckpt_io.load_model(tmp_path / "state.pt")
    torch.save({"x": torch.nn.Linear(1, 1)}, tmp_path / "pickled_module.pt")  # needs full unpickling: refused
    with pytest.raises(ckpt_io.CheckpointError, match="corrupt or not a solGPT checkpoint"):
        ckpt_io.load(tmp_path / "pickled_module.pt")
