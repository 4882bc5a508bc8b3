"""fim.py: the FIM layout, round trips in both orders, tree-sitter split points, the batch-time hook, exact resume."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fim
import solsyntax
from dataloader import BatchSampler, DataError

ROOT = Path(__file__).resolve().parents[1]

CONTRACT = """pragma solidity ^0.8.20;
contract A {
    uint256 total;
    /// @notice adds
    function add(uint a, uint b) public pure returns (uint) {
        uint c = a + b;
        return c;
    }
    function bump() external {
        if (total > 0) { total += 1; }
    }
}
"""
DOCS = [CONTRACT,
        "// SPDX-License-Identifier: MIT\nlibrary L {\n    function f(uint x) internal pure returns (uint) {\n"
        "        return x * 2;\n    }\n}\n",
        "interface I {\n    function g() external;\n}\n",
        "contract Café { string s = \"naïve ✓\"; function h() public { s = \"é\"; } }\n"]


@pytest.fixture(scope="module")
def tok():
    from tokenizer import get_tokenizer
    return get_tokenizer()


def write_dataset(root, tok, name="sol", repeat=40):
    """A prepared dataset of real tokenized Solidity documents, each followed by <|endoftext|>."""
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, reps in (("train", repeat), ("val", repeat // 4)):
        ids = []
        for k in range(reps):
            for doc in DOCS:
                ids += tok.encode(doc.replace("total", f"total{k}")) + [tok.eot_token]
        np.asarray(ids, dtype=np.uint16).tofile(d / f"{split}.bin")
        splits[split] = {"file": f"{split}.bin", "tokens": len(ids), "bytes": 4 * len(ids), "documents": reps * 4}
    meta = {"format": "solgpt-tokens-v1", "dataset": name, "tokenizer": tok.name, "tokenizer_hash": tok.hash,
            "vocab_size": tok.n_vocab, "eot_token": tok.eot_token, "dtype": "uint16", "splits": splits}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_layout_of_both_orders():
    P, S, M = 1000, 1001, 1002
    assert fim.fim_ids([1, 2], [3], [4, 5], (P, S, M)) == [P, 1, 2, S, 4, 5, M, 3]
    assert fim.fim_ids([1, 2], [3], [4, 5], (P, S, M), spm=True) == [P, S, 4, 5, M, 1, 2, 3]


@pytest.mark.parametrize("spm_rate", [0.0, 1.0])
@pytest.mark.parametrize("syntax_rate", [0.0, 1.0])
def test_document_round_trips(tok, spm_rate, syntax_rate):
    t = fim.FimTransform(tok, rate=1.0, spm_rate=spm_rate, syntax_rate=syntax_rate)
    pre, suf, mid = t.fim_tokens
    for doc in DOCS:
        for seed in range(20):
            ids = t.document(tok.encode(doc), random.Random(seed))
            assert ids[:2] == ([pre, suf] if spm_rate else [pre, ids[1]]) and ids.count(mid) == 1
            assert fim.unfim(ids, tok, t.fim_tokens) == doc


def test_tree_sitter_boundaries_on_fixture():
    src = solsyntax.Source(CONTRACT)
    bodies = [CONTRACT[a:b] for a, b in solsyntax.function_bodies(src)]
    assert bodies == ["\n        uint c = a + b;\n        return c;\n    ",
                      "\n        if (total > 0) { total += 1; }\n    "]
    assert [CONTRACT[a:b] for a, b in solsyntax.statements(src)] == [
        "uint c = a + b;", "return c;", "if (total > 0) { total += 1; }", "{ total += 1; }", "total += 1;"]
    # non-ASCII text: spans are characters, not bytes
    cafe = solsyntax.Source(DOCS[3])
    assert [DOCS[3][a:b] for a, b in solsyntax.function_bodies(cafe)] == [' s = "é"; ']
    # a syntactic split cuts out exactly one of those spans as the middle
    middles = set()
    for seed in range(40):
        i, j = fim.syntax_split(CONTRACT, random.Random(seed))
        middles.add(CONTRACT[i:j])
    assert middles <= set(bodies) | {CONTRACT[a:b] for a, b in solsyntax.statements(src)}
    assert set(bodies) <= middles  # whole function bodies are drawn, not only statements
    assert fim.syntax_split("not solidity at all", random.Random(0)) is None


def test_window_keeps_length_and_documents(tok, tmp_path):
    d = write_dataset(tmp_path, tok)
    data = np.memmap(d / "train.bin", dtype=np.uint16, mode="r")
    t = fim.FimTransform(tok, rate=1.0, spm_rate=0.5, syntax_rate=0.5)
    first = [doc.replace("total", "total0") for doc in DOCS]  # write_dataset's first copy
    docs_len = sum(len(tok.encode(doc)) + 1 for doc in first)
    # a window of the first 4 whole documents, plus room: every document comes back whole after un-FIM
    out = t.window(data, 0, docs_len + 40, random.Random(3))
    assert len(out) == docs_len + 40 and out.dtype == np.int64
    pieces = np.split(out, np.flatnonzero(out == tok.eot_token))
    texts = [fim.unfim(p[1:] if k else p, tok, t.fim_tokens) for k, p in enumerate(pieces[:4])]
    assert texts == first
    # windows at random offsets: fixed length, deterministic in the rng
    for start in (0, 7, 123, 500):
        a = t.window(data, start, 65, t.rng(1337, start))
        assert len(a) == 65 and np.array_equal(a, t.window(data, start, 65, t.rng(1337, start)))
    none = fim.FimTransform(tok, rate=0.0)
    assert np.array_equal(none.window(data, 11, 65, random.Random(0)), data[11:76])


def test_sampler_hook(tok, tmp_path):
    write_dataset(tmp_path, tok)
    plain = BatchSampler("sol", 64, 4, data_root=tmp_path)
    off = BatchSampler("sol", 64, 4, data_root=tmp_path, fim=dict(rate=0.0))
    on = BatchSampler("sol", 64, 4, data_root=tmp_path, fim=dict(rate=0.9))
    again = BatchSampler("sol", 64, 4, data_root=tmp_path, fim=dict(rate=0.9))
    sentinels = set(on.fim.fim_tokens)
    saw_fim = False
    for _ in range(5):
        (xp, yp), (xo, yo), (xf, yf), (xa, ya) = (s.get_batch("train") for s in (plain, off, on, again))
        assert xp.equal(xo) and yp.equal(yo)  # rate 0 draws today's batches
        assert xf.equal(xa) and yf.equal(ya)  # a function of (seed, batch index)
        assert xf.shape == (4, 64) and xf[:, 1:].equal(yf[:, :-1])
        saw_fim |= bool(set(xf.flatten().tolist()) & sentinels)
    assert saw_fim
    for split in ("val", "train"):  # evaluation batches stay left to right
        assert plain.get_batch(split, index=2)[0].equal(on.get_batch(split, index=2)[0])
    on.load_state_dict(again.state_dict())  # the same FIM settings resume ...
    for other in (plain, BatchSampler("sol", 64, 4, data_root=tmp_path, fim=dict(rate=0.5))):  # ... others do not
        with pytest.raises(DataError, match="resume with the same fim_rate"):
            on.load_state_dict(other.state_dict())
    assert plain.state_dict() == {"step": 5, "seed": 1337, "world_size": 1, "dataset": "sol:1.0"}  # FIM off: as before
    with pytest.raises(DataError, match="FIM needs the dataset's tokenizer"):
        from core_data import make_dataset
        make_dataset(tmp_path, "fake", tokenizer="fake")  # a tokenizer FIM cannot load
        BatchSampler("fake", 16, 2, data_root=tmp_path, fim=dict(rate=0.5))


def test_exact_resume_with_fim(tok, tmp_path):
    write_dataset(tmp_path, tok)
    base = [sys.executable, str(ROOT / "train.py"), "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=64",
            "--batch_size=4", "--eval_iters=2", "--eval_interval=5", "--log_interval=1", "--warmup_iters=2",
            "--lr_decay_iters=20", "--device=cpu", "--dataset=sol", f"--data_root={tmp_path}", "--fim_rate=0.5"]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}

    def run(out, *args):
        proc = subprocess.run([*base, f"--out_dir={out}", *args], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    straight = run(tmp_path / "straight", "--max_iters=20")
    run(tmp_path / "resumed", "--max_iters=10")
    resumed = run(tmp_path / "resumed", "--max_iters=20", "--init_from=resume")
    losses = lambda recs: {r["iter"]: r["loss"] for r in recs if "loss" in r}  # noqa: E731
    assert len(losses(straight)) == 20 and losses(resumed) == losses(straight)  # bit for bit
    plain = run(tmp_path / "plain", "--max_iters=20", "--fim_rate=0.0")
    assert losses(plain) != losses(straight)  # the knob does change what is trained on
