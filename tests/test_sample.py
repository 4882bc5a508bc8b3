"""sample.py: weights-only loading, prompts, --out, reproducibility, one-line errors."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoint as ckpt_io
import sample
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


class ByteTokenizer:
    """Stand-in tokenizer (bytes + one eot id) so generation is tested without the real BPE files."""
    name, n_vocab, eot_token, hash = "bytes", 257, 256, "b" * 64

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def write_checkpoint(path, n_vocab, tokenizer="bytes", tokenizer_hash="b" * 64, seed=0):
    torch.manual_seed(seed)
    args = dict(block_size=16, vocab_size=(n_vocab + 63) // 64 * 64, n_layer=1, n_head=2, n_embd=16, dropout=0.0,
                bias=False, pos_encoding="learned")
    model = GPT(GPTConfig(**args))
    ckpt_io.atomic_torch_save(ckpt_io.model_checkpoint(model, args, tokenizer, tokenizer_hash, 10, 2.0), path)
    return path


def run_sample(*args):
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), *args], capture_output=True, text=True, timeout=120)


def test_samples_are_reproducible_and_written_atomically(tmp_path, capsys):
    ck = write_checkpoint(tmp_path / "model.pt", 257)
    outs = []
    for name in ("a.txt", "b.txt"):
        sample.main([f"--ckpt={ck}", "--start=contract A {", "--num_samples=2", "--max_new_tokens=40", "--seed=5",
                     "--stop_at_eot=False", f"--out={tmp_path / name}"], tokenizer=ByteTokenizer())
        outs.append((tmp_path / name).read_text())
    assert outs[0] == outs[1]
    samples = outs[0].split(sample.SEPARATOR)
    assert len(samples) == 2 and all(s.startswith("contract A {") for s in samples)
    assert "tokens/s" in capsys.readouterr().err
    sample.main([f"--out_dir={tmp_path}", "--start=contract A {", "--num_samples=2", "--max_new_tokens=40",
                 "--seed=6", "--stop_at_eot=False", f"--out={tmp_path / 'c.txt'}"], tokenizer=ByteTokenizer())
    assert (tmp_path / "c.txt").read_text() != outs[0]


def test_generated_ids_stay_in_tokenizer_vocab(tmp_path):
    ck = write_checkpoint(tmp_path / "model.pt", 257)  # model vocab padded to 320
    model, _ = ckpt_io.load_model(ck)
    cfg = dict(sample.DEFAULTS, num_samples=3, max_new_tokens=200, temperature=2.0, top_k=0, top_p=1.0,
               stop_at_eot=False)
    for ids, _ in sample.generate_samples(model, [256], cfg, 256, 257, "cpu"):
        assert max(ids) < 257


def test_special_tokens_other_than_eot_are_never_sampled_unless_allowed(tmp_path):
    """A FIM-trained model can write <|fim_middle|> in a left-to-right sample; sample.py bans every special token but
    <|endoftext|> (random weights at temperature 2 over 258 tokens: ~8 of 2,000 tokens are the special one)."""
    class WithSpecials(ByteTokenizer):
        n_vocab, special_tokens = 258, {"<|endoftext|>": 256, "<|fim_middle|>": 257}
    tok = WithSpecials()
    model, _ = ckpt_io.load_model(write_checkpoint(tmp_path / "model.pt", 258))
    for allow in (True, False):
        cfg = dict(sample.DEFAULTS, num_samples=1, max_new_tokens=2000, temperature=2.0, top_k=0, top_p=1.0,
                   stop_at_eot=False, allow_special=allow)
        banned = sample.banned_specials(tok, cfg)
        assert banned == ([] if allow else [257])
        (ids, _), = sample.generate_samples(model, [256], cfg, 256, 258, "cpu", banned=banned)
        assert (257 in ids) == allow and 256 in ids  # end-of-text stays allowed (stop_at_eot decides)


def test_prompt_from_file_and_eot_stop(tmp_path, capsys):
    ck = write_checkpoint(tmp_path / "model.pt", 257)
    (tmp_path / "p.sol").write_text("pragma solidity ^0.8.20;\n")
    sample.main([f"--ckpt={ck}", f"--start=FILE:{tmp_path / 'p.sol'}", "--num_samples=1", "--max_new_tokens=5",
                 "--temperature=0"], tokenizer=ByteTokenizer())
    assert capsys.readouterr().out.startswith("pragma solidity ^0.8.20;\n")
    tok = ByteTokenizer()
    assert sample.decode_sample(tok, "p", [65, 66, 256, 67]) == "pAB"  # cut at end-of-text


def test_user_errors_are_one_line(tmp_path):
    proc = run_sample(f"--out_dir={tmp_path / 'nothing'}")
    assert proc.returncode != 0 and "not found: train a model first" in proc.stderr
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 truncated")
    proc = run_sample(f"--ckpt={tmp_path / 'torn.pt'}")
    assert proc.returncode != 0 and "is corrupt" in proc.stderr
    for p in (proc,):
        assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    ck = write_checkpoint(tmp_path / "model.pt", 257)
    with pytest.raises(SystemExit, match="prompt file .* not found"):
        sample.main([f"--ckpt={ck}", f"--start=FILE:{tmp_path / 'missing.sol'}"], tokenizer=ByteTokenizer())
    (tmp_path / "latin1.sol").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(SystemExit, match="not UTF-8"):
        sample.main([f"--ckpt={ck}", f"--start=FILE:{tmp_path / 'latin1.sol'}"], tokenizer=ByteTokenizer())
    for bad, message in (("--top_p=1.5", "--top_p must be in (0, 1], got 1.5"),
                         ("--temperature=-1.0", "--temperature must be >= 0 (0 is greedy), got -1.0")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            sample.main([f"--ckpt={ck}", bad], tokenizer=ByteTokenizer())
    small = write_checkpoint(tmp_path / "small.pt", 60)  # a model whose vocabulary the prompt does not fit
    with pytest.raises(SystemExit, match="outside the model's vocabulary"):
        sample.main([f"--ckpt={small}", "--start=zzz"], tokenizer=ByteTokenizer())


def real_tokenizer():
    try:
        from tokenizer import get_tokenizer
        return get_tokenizer()
    except Exception as e:  # the tokenizer is another part of the project; these tests need its files
        pytest.skip(f"default tokenizer unavailable: {e}")


def test_sample_script_with_default_tokenizer(tmp_path):
    tok = real_tokenizer()
    write_checkpoint(tmp_path / "model.pt", tok.n_vocab, tok.name, tok.hash)
    proc = run_sample(f"--out_dir={tmp_path}", "--start=pragma solidity", "--num_samples=2", "--max_new_tokens=8",
                      f"--out={tmp_path / 's.txt'}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pragma solidity") and "tokens/s" in proc.stderr
    assert len((tmp_path / "s.txt").read_text().split(sample.SEPARATOR)) == 2
    proc = run_sample(f"--out_dir={tmp_path}", f"--start=FILE:{tmp_path / 'missing.sol'}")
    assert proc.returncode != 0 and proc.stderr.startswith("error: prompt file")


def test_tokenizer_mismatch_is_refused(tmp_path):
    tok = real_tokenizer()
    ck = write_checkpoint(tmp_path / "model.pt", tok.n_vocab, tok.name, "0" * 64)
    proc = run_sample(f"--ckpt={ck}")
    assert proc.returncode != 0 and "different" in proc.stderr and "Traceback" not in proc.stderr


def test_unreadable_prompt_and_bad_checkpoint_args_are_one_line(tmp_path):
    ck = write_checkpoint(tmp_path / "model.pt", 257)
    with pytest.raises(SystemExit, match="cannot read prompt file"):  # a directory: IsADirectoryError, an OSError
        sample.main([f"--ckpt={ck}", f"--start=FILE:{tmp_path}"], tokenizer=ByteTokenizer())
    bad = torch.load(ck, weights_only=True)
    bad["model_args"]["n_embd"] = "wide"  # TypeError/ValueError inside GPT(...), not RuntimeError
    torch.save(bad, tmp_path / "bad_args.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="does not match its model_args"):
        ckpt_io.load_model(tmp_path / "bad_args.pt")


def test_thread_count_is_set_on_cpu(tmp_path):
    ck = write_checkpoint(tmp_path / "model.pt", 257)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sample.main([f"--ckpt={ck}", "--num_samples=1", "--max_new_tokens=2", "--device=cpu"], tokenizer=ByteTokenizer())
        assert torch.get_num_threads() == 2  # the default 0 leaves PyTorch's count alone
        sample.main([f"--ckpt={ck}", "--num_samples=1", "--max_new_tokens=2", "--device=cpu", "--threads=1"],
                    tokenizer=ByteTokenizer())
        assert torch.get_num_threads() == 1
        with pytest.raises(SystemExit, match=re.escape("error: --threads must be >= 0 (0 = one per core), got -1")):
            sample.main([f"--ckpt={ck}", "--threads=-1"], tokenizer=ByteTokenizer())
    finally:
        torch.set_num_threads(before)
