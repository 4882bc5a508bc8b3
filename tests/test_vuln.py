"""Vulnerability classification (vuln.py, train.py --task=classify, classify.py, bench.py's vuln section) on tiny
models and fixtures laid out like the Hub's slither-audited-smart-contracts Parquet export."""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import checkpoint as ckpt_io
import classify
import train
import vuln
from compiler import inject
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=64", "--batch_size=4", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--learning_rate=3e-3", "--device=cpu", "--task=classify",
        "--dataset=slither-audited-smart-contracts", "--cls_max_windows=3", "--eval_interval=4"]
SAFE, AC = vuln.CLASSES.index("safe"), vuln.CLASSES.index("access-control")


def contract(i, vulnerable, lines=3):
    body = "".join(f"    uint256 public v{i}_{k};\n" for k in range(lines))
    bug = ("    address owner;\n    function setOwner(address n) public {\n        require(tx.origin == owner);\n"
           "        owner = n;\n    }\n") if vulnerable else "    function get() public view returns (uint256) { return 1; }\n"
    return f"// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\n\ncontract C{i} {{\n{body}{bug}}}\n"


def make_hub(root, n=(24, 8, 8), copied=()):
    """<root>/big-multilabel/{train,validation,test}/0000.parquet: half the contracts use tx.origin (access-control),
    the rest are safe; a few are long enough for several windows. copied: (split, row) pairs whose source is test
    row 0's with a comment added (a contract deployed again)."""
    for split, count in zip(("train", "validation", "test"), n):
        rows = []
        for i in range(count):
            bad = i % 2 == 0
            source = contract(f"{split[:2]}{i}", bad, 3 + 12 * (i % 3 == 0))
            if (split, i) in copied:
                source = "// deployed again\n" + contract("te0", True, 3 + 12)
            rows.append({"address": f"0x{split[:2]}{i:038x}", "source_code": source,
                         "bytecode": "0x6080", "slither": [AC] if bad else [SAFE]})
        d = root / "big-multilabel" / split
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "0000.parquet")
    return root


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return make_hub(tmp_path_factory.mktemp("hub"))


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_here(out_dir, hub, *args):
    return train.main([*TINY, f"--cls_hub_path={hub}", f"--out_dir={out_dir}", *args])


def metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("token_pool, hidden", [("cls", 0), ("maxmean", 0), ("maxmean", 16)])  # maxmean: the recipe's
def test_classifier_trains_and_its_checkpoint_loads_weights_only(tmp_path, hub, token_pool, hidden):
    assert train_here(tmp_path / "out", hub, "--max_iters=8", "--lr_decay_iters=8",
                      f"--cls_token_pool={token_pool}", f"--cls_head_hidden={hidden}") == 0
    ckpt = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert ckpt["task"] == "classify" and ckpt["classes"] == list(vuln.CLASSES)
    assert ckpt["model_args"]["n_classes"] == 6 and len(ckpt["thresholds"]) == 6
    width = 32 * (2 if token_pool == "maxmean" else 1)  # maxmean: [max, mean] of each window's 32-wide states
    if hidden:  # a hidden layer (GELU) between the pooled state and the outputs
        assert ckpt["model_args"]["cls_head_hidden"] == hidden
        assert ckpt["model"]["cls_head.out.0.weight"].shape == (hidden, width)
        assert ckpt["model"]["cls_head.out.2.weight"].shape == (6, hidden)
    else:
        assert ckpt["model"]["cls_head.out.weight"].shape == (6, width)
    assert all(isinstance(t, float) for t in ckpt["thresholds"])
    evals = [r for r in metrics(tmp_path / "out") if "val_loss" in r]
    assert [r["iter"] for r in evals] == [0, 4, 8] and evals[-1]["final"]
    steps = [r for r in metrics(tmp_path / "out") if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"]
    # speed in files: a token count and an MFU of block_size-long windows would be made up for files of any length
    assert all(r["files_per_s"] > 0 and "mfu" not in r and "tok_per_s" not in r for r in steps)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert " files/s, " in log and "tok/s" not in log and "mfu" not in log
    model, _ = ckpt_io.load_model(tmp_path / "out" / "model.pt")
    assert model.config.n_classes == 6


@pytest.mark.parametrize("shift", [False, True])
def test_classifier_resume_is_exact(tmp_path, hub, one_thread, shift):
    args = ["--max_iters=8", "--lr_decay_iters=8", "--dropout=0.1", f"--cls_window_shift={shift}"]
    assert train_here(tmp_path / "full", hub, *args) == 0
    assert train_here(tmp_path / "part", hub, *args[1:], "--max_iters=4") == 0
    assert train_here(tmp_path / "part", hub, *args, "--init_from=resume") == 0
    loss = lambda d: {r["iter"]: r["loss"] for r in metrics(d) if "loss" in r}  # noqa: E731
    assert loss(tmp_path / "full") == loss(tmp_path / "part")
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["thresholds"] == b["thresholds"]


def test_a_run_stopped_between_evaluations_says_its_thresholds_are_stale_until_resumed(tmp_path, hub, monkeypatch,
                                                                                       capsys):
    """Stopped at iter 3, model.pt holds iter-3 weights beside the thresholds tuned at iter 0: classify.py and
    bench.py warn; the resumed run tunes them on its final weights and the warning goes."""
    step = train.Trainer.step

    def stop_at_3(self, lr, n_micro, stop):
        if self.iter_num == 3:
            stop.signum = signal.SIGINT
        return step(self, lr, n_micro, stop)
    monkeypatch.setattr(train.Trainer, "step", stop_at_3)
    out = tmp_path / "out"
    assert train_here(out, hub, "--max_iters=8", "--lr_decay_iters=8", "--eval_interval=100") == 128 + signal.SIGINT
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert (ckpt["iter_num"], ckpt["thresholds_iter"]) == (4, 0)
    capsys.readouterr()
    classify.load_classifier(out / "model.pt")
    assert capsys.readouterr().err == (f"warning: {out / 'model.pt'}: its thresholds were tuned at iter 0 but its "
                                       "weights are from iter 4 (the run stopped between evaluations): finish it "
                                       "with --init_from=resume, which tunes them on the final weights\n")
    monkeypatch.undo()
    assert train_here(out, hub, "--max_iters=8", "--lr_decay_iters=8", "--eval_interval=100",
                      "--init_from=resume") == 0
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["iter_num"] == ckpt["thresholds_iter"] == 8
    capsys.readouterr()
    classify.load_classifier(out / "model.pt")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("change, message", [
    ("--cls_max_windows=2", "the checkpoint was trained with --cls_max_windows=3; resume with the same"),
    ("--cls_max_docs=6", "the train/validation files differ from those this run was trained on (another "
                         "--cls_val_fraction or --cls_extra_train, or changed labels): resume with the run's "
                         "--cls_val_fraction, --cls_extra_train and labels, or start a new --out_dir")])
def test_resume_refuses_other_windows_or_other_train_and_validation_files(tmp_path, hub, change, message):
    """Either would go on silently otherwise: files trained on would be tuned and scored as validation."""
    out = tmp_path / "out"
    assert train_here(out, hub, "--max_iters=2", "--lr_decay_iters=4") == 0
    with pytest.raises(SystemExit) as e:
        train_here(out, hub, "--max_iters=4", "--lr_decay_iters=4", "--init_from=resume", change)
    assert str(e.value) == f"error: cannot resume: {message}"
    assert torch.load(out / "model.pt", weights_only=True)["iter_num"] == 2


def test_init_from_a_language_model_loads_every_weight_and_adds_the_head(tmp_path, hub, monkeypatch):
    lm = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=16448, bias=False))
    from tokenizer import get_tokenizer
    tok = get_tokenizer()
    ckpt_io.atomic_torch_save(ckpt_io.model_checkpoint(lm, {**lm.config.__dict__}, tok.name, tok.hash, 100, 5.0),
                              tmp_path / "lm.pt")
    seen = {}
    real = train.Trainer.__init__

    def spy(self, cfg, dist_info, device, dtype, sampler, model, *a, **k):
        seen["model"] = {n: p.detach().clone() for n, p in model.state_dict().items()}
        real(self, cfg, dist_info, device, dtype, sampler, model, *a, **k)
    monkeypatch.setattr(train.Trainer, "__init__", spy)
    assert train_here(tmp_path / "ft", hub, f"--init_from={tmp_path / 'lm.pt'}", "--max_iters=1",
                      "--lr_decay_iters=1", "--n_layer=2", "--n_head=2", "--n_embd=32") == 0
    lm_weights = lm.state_dict()
    assert {k for k in seen["model"] if not k.startswith("cls_head.")} == set(lm_weights)
    assert all(torch.equal(seen["model"][k], lm_weights[k]) for k in lm_weights)
    assert {k for k in seen["model"] if k.startswith("cls_head.")} == {
        "cls_head.score.weight", "cls_head.score.bias", "cls_head.out.weight", "cls_head.out.bias"}


def with_detectors(splits):
    """The hub fixture's splits as slither-labels has them: each file also names the detectors behind its labels."""
    return {s: [{**e, "detectors": ["tx-origin"] if "access-control" in e["labels"] else []} for e in ex]
            for s, ex in splits.items()}


def test_detector_head_trains_beside_the_classes_and_classify_returns_the_classes(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(vuln, "load_splits", lambda cfg: with_detectors(vuln.hub_splits(hub)))
    assert train_here(tmp_path / "out", hub, "--max_iters=8", "--lr_decay_iters=8", "--cls_detector_weight=1.0",
                      "--dataset=slither-labels") == 0
    ckpt = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert ckpt["model_args"]["n_detectors"] == len(vuln.DETECTORS) == 38
    assert ckpt["model"]["cls_head.out.weight"].shape == (6 + 38, 32) and len(ckpt["thresholds"]) == 6
    model, _ = ckpt_io.load_model(tmp_path / "out" / "model.pt")
    x = vuln.stack_windows(vuln.encode_files(__import__("tokenizer").get_tokenizer(), [contract(0, True)], 64, 3), 3)
    with torch.no_grad():
        logits, per_window = model.classify(x)
        both, _ = model.classify(x, with_detectors=True)
    assert logits.shape == (1, 6) and per_window.shape == (1, 3, 6) and both.shape == (1, 44)
    assert torch.equal(both[:, :6], logits)
    # the detector outputs were trained: tx-origin (the fixture's only detector) rose above the detectors never seen
    tx, never = 6 + vuln.DETECTORS.index("tx-origin"), 6 + vuln.DETECTORS.index("reentrancy-eth")
    assert both[0, tx] > both[0, never]


def test_detector_loss_is_added_with_its_weight_and_zero_weight_is_the_class_loss():
    torch.manual_seed(0)
    cfg = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=128, n_classes=6, cls_token_pool="maxmean")
    plain, both = GPT(GPTConfig(**cfg)), GPT(GPTConfig(**cfg, n_detectors=4))
    state = plain.state_dict()  # the same trunk; the class rows of the wider head are plain's head
    state["cls_head.out.weight"] = torch.cat([state["cls_head.out.weight"], torch.randn(4, 64)])
    state["cls_head.out.bias"] = torch.cat([state["cls_head.out.bias"], torch.randn(4)])
    both.load_state_dict(state)
    plain.eval(), both.eval()
    x = torch.randint(0, 127, (3, 2, 16))
    y = torch.randint(0, 2, (3, 10)).float()
    plain.cls_pos_weight.fill_(3.0), both.cls_pos_weight.fill_(3.0)
    _, class_loss = plain(x, y[:, :6])
    _, zero = both(x, y)
    torch.testing.assert_close(zero, class_loss, rtol=0, atol=1e-6)
    both.cls_detector_weight = 0.5
    logits, half = both(x, y)
    assert logits.shape == (3, 6)
    det = torch.nn.functional.binary_cross_entropy_with_logits(
        both.classify(x, with_detectors=True)[0][:, 6:], y[:, 6:], pos_weight=torch.full((4,), 3.0))
    torch.testing.assert_close(half, class_loss + 0.5 * det, rtol=1e-6, atol=1e-6)


def test_detector_weight_without_detector_labels_is_a_one_line_error(tmp_path, hub, capsys):
    with pytest.raises(SystemExit) as e:
        train_here(tmp_path / "out", hub, "--max_iters=1", "--cls_detector_weight=1.0")
    assert str(e.value) == ("error: --cls_detector_weight needs the Slither detectors behind each label, which "
                            "--dataset=slither-audited-smart-contracts does not have: use --dataset=slither-labels "
                            "or --cls_detector_weight=0")
    assert not (tmp_path / "out" / "model.pt").exists()


def test_hub_contracts_that_copy_a_validation_or_test_contract_leave_the_earlier_split(tmp_path, capsys):
    hub = make_hub(tmp_path, n=(6, 4, 4), copied={("train", 1), ("train", 3), ("validation", 2)})
    splits = vuln.hub_splits(hub)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 3, 4]
    names = {s: {e["name"][4:].lstrip("0") or "0" for e in splits[s]} for s in splits}
    assert names["train"] == {"0", "2", "4", "5"} and names["val"] == {"0", "1", "3"}
    assert capsys.readouterr().err == ("slither-audited-smart-contracts: left out 2 train and 1 validation contracts "
                                       "that copy a validation or test contract\n")


# ------------------------------------------------------------------------------------------------ windows, pooling
def tiny_classifier(pool="attention", token_pool="cls", seed=0, hidden=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, n_classes=6,
                         cls_pool=pool, cls_token_pool=token_pool, cls_head_hidden=hidden)).eval()


@pytest.mark.parametrize("pool, token_pool, hidden", [
    ("attention", "cls", 0), ("max", "cls", 0), ("attention", "max", 0), ("attention", "maxmean", 0),
    ("class_attention", "maxmean", 0), ("attention", "maxmean", 8), ("class_attention", "maxmean", 8)])
def test_padding_windows_and_padding_tokens_do_not_change_the_output(pool, token_pool, hidden):
    model = tiny_classifier(pool, token_pool, hidden=hidden)
    ids = list(range(1, 40))  # 39 tokens: windows of 15 + <|cls|> -> 3 windows, the last one partly padding
    w, starts = vuln.file_windows(ids, 16, 8, cls_id=127)
    assert starts == [0, 15, 30] and w.shape == (3, 16)
    assert (w[:, -1][:2] == 127).all() and list(w[2, :10]) == ids[30:] + [127] and (w[2, 10:] == -1).all()
    with torch.no_grad():
        alone, per_window = model.classify(vuln.stack_windows([w], 3))
        padded, _ = model.classify(vuln.stack_windows([w], 6))  # three padding windows more
        short = vuln.file_windows(ids[:5], 16, 8, 127)[0]
        both, _ = model.classify(vuln.stack_windows([w, short], 6))  # batched with a one-window file
    torch.testing.assert_close(alone, padded, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, both[:1], rtol=0, atol=1e-6)
    assert torch.isfinite(per_window).all()
    # the output depends on the last window (the file is covered past the first block)
    w2 = w.copy()
    w2[2, 3] = 99
    with torch.no_grad():
        changed, _ = model.classify(vuln.stack_windows([w2], 3))
    assert not torch.allclose(alone, changed)


def test_class_attention_pools_the_window_states_with_each_outputs_own_weights():
    torch.manual_seed(1)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, n_classes=6, n_detectors=3,
                          cls_pool="class_attention", cls_token_pool="maxmean")).eval()
    head = model.cls_head
    assert head.score.out_features == 9  # the 6 classes and the 3 detectors
    seen = []
    head.score.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    files = [list(range(1, 40)), list(range(5, 40, 2))]  # 3 windows and 2
    idx = vuln.stack_windows([vuln.file_windows(ids, 16, 8, 127)[0] for ids in files], 4)
    real = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert torch.equal(idx[:, :, 0] >= 0, real)
    with torch.no_grad():
        logits, _ = model.classify(idx, with_detectors=True)
        hw = seen[0]  # (B, W, 2C): the window states, zeros for padding windows
        weights = head.score(hw).masked_fill(~real[..., None], float("-inf")).softmax(1)  # (B, W, 9)
        for k in range(9):  # the definition: output k reads the states pooled with its own weights
            pooled_k = (weights[..., k:k + 1] * hw).sum(1)
            torch.testing.assert_close(logits[:, k], head.out(pooled_k)[:, k], rtol=0, atol=1e-5)
        shared = head.out((weights[..., :1] * hw).sum(1))  # every output with output 0's weights: not what it does
        assert not torch.allclose(logits[:, 1:], shared[:, 1:], atol=1e-3)
        classes_only, _ = model.classify(idx)
    torch.testing.assert_close(classes_only, logits[:, :6], rtol=0, atol=0)


def test_files_encoded_in_chunks_give_the_windows_and_tokens_of_all_at_once(monkeypatch):
    """The chunks only bound memory (a large split's token lists never all exist at once): same windows, same ids."""
    from tokenizer import get_tokenizer
    tok = get_tokenizer()
    texts = [contract(i, i % 2 == 0, 1 + 9 * (i % 4)) for i in range(10)]
    at_once = tok.encode_batch(texts)
    expected = vuln.windows_of(at_once, 16, 3, tok.special_tokens[vuln.CLS_TOKEN])
    monkeypatch.setattr(vuln, "ENCODE_CHUNK", 3)
    windows, ids = vuln.encode_files(tok, texts, 16, 3, keep_ids=True)
    assert len(windows) == len(ids) == 10 and any(len(w) == 3 for w in windows)
    assert all(np.array_equal(a, b) for a, b in zip(windows, expected))
    assert all(x.dtype == np.int32 and x.tolist() == y for x, y in zip(ids, at_once))


def test_long_files_keep_evenly_spaced_windows_first_and_last():
    assert vuln.window_starts(10, 16, 8) == [0]
    assert vuln.window_starts(0, 16, 8) == [0]
    starts = vuln.window_starts(15 * 20, 16, 4)  # 20 windows, 4 kept
    assert starts == [0, 15 * 6, 15 * 13, 15 * 19]


def test_shifted_windows_cover_every_token_once_and_the_sampler_draws_them_reproducibly(hub):
    ids = list(range(1, 40))
    for shift in range(15):  # windows of 15 tokens + <|cls|>
        w, starts = vuln.file_windows(ids, 16, 8, cls_id=127, shift=shift)
        assert [t for row in w for t in row if t not in (-1, 127)] == ids
        assert starts == ([0, shift, shift + 15, shift + 30][:3 + (0 < shift < 9)] if shift else [0, 15, 30])
        assert ((w == 127).sum(1) == 1).all()  # one <|cls|> per window, after its tokens
    from tokenizer import get_tokenizer
    splits = vuln.hub_splits(hub)
    make = lambda shift: vuln.ClassifySampler(splits, get_tokenizer(), 64, 4, 3, window_shift=shift)  # noqa: E731
    plain, shifted, again = make(False), make(True), make(True)
    draws = [(shifted.get_batch()[0], again.get_batch()[0], plain.get_batch()[0]) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b, _ in draws)  # a function of (seed, micro-batch index)
    assert any(not torch.equal(a, c) for a, _, c in draws)  # and not the fixed cut
    assert all(np.array_equal(shifted.windows[s][0], plain.windows[s][0]) for s in ("val", "test"))  # eval: fixed
    shifted.load_state_dict(again.state_dict())  # the same stream: resumes
    with pytest.raises(vuln.DataError, match=r"^the checkpoint was trained with --cls_window_shift=True; resume with "
                                             r"the same$"):
        plain.load_state_dict(shifted.state_dict())
    stripped = vuln.ClassifySampler(splits, get_tokenizer(), 64, 4, 3, strip_comments=True)
    with pytest.raises(vuln.DataError, match=r"^the checkpoint was trained with --cls_strip_comments=False; resume "
                                             r"with the same$"):
        stripped.load_state_dict(plain.state_dict())


# ------------------------------------------------------------------------------------------------ splits
def val_groups_of(examples, fraction):
    train, val = vuln.by_project_val(examples, fraction)
    assert len(train) + len(val) == len(examples)
    groups = lambda exs: {e["group"] for e in exs}  # noqa: E731
    assert not groups(train) & groups(val)  # whole groups only
    return groups(val)


def test_validation_split_takes_whole_projects_and_enough_of_a_rare_class():
    names = [f"pkg{i}" for i in range(10)]
    first, *rest = sorted(names, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    examples = [{"group": g, "labels": ["safe"], "text": "", "name": g} for g in names for _ in range(10)]
    assert val_groups_of(examples, 0.1) == {first}  # sha256 order until 10% of the files
    # arithmetic: 1 file in the first package, 6 in one other, 4 in a third, 1 in a fourth; val needs >= 0.6 of 12
    counts = {first: 1, rest[3]: 6, rest[5]: 4, rest[7]: 1}
    for g, k in counts.items():
        for e in [e for e in examples if e["group"] == g][:k]:
            e["labels"] = ["arithmetic"]
    assert val_groups_of(examples, 0.1) == {first}  # 1 of 12 already holds half of 10%
    assert val_groups_of(examples, 0.3) == {first, *rest[:2], rest[3]}  # 3 files, then 1 < 1.8: the densest
    # a class whose train-side positives would all leave with one group stays in train
    lone = [{"group": g, "labels": ["reentrancy"] if g == rest[4] else ["safe"], "text": "", "name": g}
            for g in names for _ in range(10)]
    assert rest[4] not in val_groups_of(lone, 0.1)


def test_validation_split_passes_over_a_project_that_would_overshoot_its_share():
    names = sorted([f"pkg{i}" for i in range(10)], key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    sizes = dict(zip(names, [50, 10, 12, 11] + [10] * 6))  # 144 files: 10% is 14.4, 1.25x that 18
    examples = [{"group": g, "labels": ["safe"], "text": "", "name": g} for g in names for _ in range(sizes[g])]
    # the first (50 files) would make val 35% of the data; the second fits; then none fits: the smallest left
    assert val_groups_of(examples, 0.1) == {names[1], names[4]}
    big = [{"group": g, "labels": ["safe"], "text": "", "name": g} for g in names[:2] for _ in range(sizes[g] + 10)]
    assert val_groups_of(big, 0.1) == {names[1]}  # 60 and 20 files, neither fits 10%: the smaller


def test_offline_validation_keeps_every_version_and_variant_of_a_project_on_one_side(monkeypatch):
    assert vuln.project_of("@openzeppelin/contracts-upgradeable@5.7.0") == "@openzeppelin"
    assert vuln.project_of("@openzeppelin/contracts@4.9.6") == "@openzeppelin"
    assert vuln.project_of("solady@0.1.26") == vuln.project_of("solady@0.2.0") == "solady"
    assert vuln.project_of("erc721a-upgradeable@4.3.0") == "erc721a"
    packages = ["@oz/contracts@4.9.6", "@oz/contracts-upgradeable@4.9.6", "@oz/contracts@5.0.0",
                "solmate@6.0.0", "solmate@6.2.0"] + [f"lib{i}@1.0.0" for i in range(8)]
    row = lambda pkg, split: {"text": "", "labels": ["safe"], "detectors": [], "package": pkg,  # noqa: E731
                              "path": "A.sol", "kind": "clean", "split": split}
    rows = [row(p, "train") for p in packages for _ in range(5)] + [row("@held/out@1.0.0", "held_out")]
    fake = type(sys)("prepare")
    fake.labelled_examples = lambda *a, **k: iter(rows)
    monkeypatch.setitem(sys.modules, "prepare", fake)  # offline_splits imports data/slither-labels/prepare.py
    splits = vuln.offline_splits(0.3)
    sides = {s: {e["group"] for e in splits[s]} for s in ("train", "val")}
    assert sides["train"] | sides["val"] == {"@oz", "solmate"} | {f"lib{i}" for i in range(8)}
    assert not sides["train"] & sides["val"] and sides["val"]
    assert [e["name"] for e in splits["test"]] == ["@held/out@1.0.0/A.sol"]


def test_offline_splits_extra_train_joins_train_and_leaves_validation_and_test_alone(tmp_path, monkeypatch):
    from data.packages import tarball_name
    row = lambda pkg, split, i: {"text": f"contract C{i} {{}}", "labels": ["safe"], "detectors": [],  # noqa: E731
                                 "package": pkg, "path": f"C{i}.sol", "kind": "clean", "split": split}
    corpus = [row(f"lib{i % 6}@1.0.0", "train", i) for i in range(30)] + [row("@held/out@1.0.0", "held_out", 99)]
    extra = [row("extraco@2.0.0", "train", 100 + i) for i in range(4)]
    fake = type(sys)("prepare")
    fake.labelled_examples = lambda split, labels_path=None, tarball_dir=None: iter(
        [r for r in (extra if "extra" in str(labels_path) else corpus) if split in (None, r["split"])])
    fake.HERE, fake.EXTRA_TRAIN_FILE = tmp_path, tmp_path / "extra_train.json"
    fake.EXTRA_TRAIN_FILE.write_text(json.dumps({"packages": [{"name": "extraco", "version": "2.0.0"}]}))
    monkeypatch.setitem(sys.modules, "prepare", fake)  # offline_splits imports data/slither-labels/prepare.py
    with pytest.raises(vuln.DataError, match=r"labels_extra_train.json is missing \(--cls_extra_train reads it\): "
                                             r"restore it with git checkout, or remake it with python "
                                             r"data/slither-labels/prepare.py --extra_train$"):
        vuln.offline_splits(0.3, extra_train=True, tarball_dir=tmp_path)
    (tmp_path / "labels_extra_train.json").write_text(json.dumps({"files": [{"package": "extraco@2.0.0"}]}))
    (tmp_path / tarball_name("extraco", "2.0.0")).write_bytes(b"")  # in the cache: nothing to fetch
    base = vuln.offline_splits(0.3, tarball_dir=tmp_path)
    more = vuln.offline_splits(0.3, extra_train=True, tarball_dir=tmp_path)
    assert more["val"] == base["val"] and more["test"] == base["test"] and base["val"]
    assert more["train"] == base["train"] + [e for e in more["train"] if e["group"] == "extraco"]
    assert [e["name"] for e in more["train"][len(base["train"]):]] == [f"extraco@2.0.0/C{100 + i}.sol" for i in range(4)]


# ------------------------------------------------------------------------------------------------ metrics
def test_f1_scores_on_a_hand_computed_example():
    y = np.zeros((4, 6), int)
    p = np.zeros((4, 6), int)
    y[[0, 1], AC] = 1       # access-control: tp 1 (row 0), fn 1 (row 1), fp 1 (row 2)
    p[[0, 2], AC] = 1
    y[[2, 3], SAFE] = 1     # safe: tp 1 (row 3), fn 1 (row 2)
    p[3, SAFE] = 1
    s = vuln.f1_scores(y, p)
    ac, safe = s["per_class"]["access-control"], s["per_class"]["safe"]
    assert (ac["precision"], ac["recall"], ac["f1"]) == (0.5, 0.5, 0.5)
    assert (safe["precision"], safe["recall"]) == (1.0, 0.5) and safe["f1"] == pytest.approx(2 / 3)
    assert s["per_class"]["reentrancy"]["f1"] == 0.0
    assert s["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 6)
    assert s["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # tp 2, fp 1, fn 2


def test_average_precision_matches_scikit_learn_with_ties_and_an_empty_class():
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(0)
    y = rng.random((60, 3)) < 0.3
    probs = np.round(rng.random((60, 3)), 1)  # rounded: many ties, which one cut takes together
    y[:, 2] = False
    ap = vuln.average_precision(y, probs)
    assert ap[2] is None
    for k in (0, 1):
        assert ap[k] == pytest.approx(average_precision_score(y[:, k], probs[:, k]), abs=1e-12)
    assert vuln.average_precision([[1], [0], [1]], [[0.9], [0.8], [0.1]]) == [pytest.approx((1 + 2 / 3) / 2)]


def test_thresholds_and_decide():
    y = np.zeros((4, 6), int)
    y[[0, 1], AC] = 1
    y[[2, 3], SAFE] = 1
    probs = np.full((4, 6), 0.1)
    probs[:, AC] = [0.9, 0.3, 0.2, 0.05]
    probs[:, SAFE] = [0.2, 0.1, 0.6, 0.7]
    thr = vuln.tune_thresholds(y, probs)
    assert thr[AC] == pytest.approx(0.25) and thr[SAFE] == pytest.approx(0.4)
    assert thr[vuln.CLASSES.index("reentrancy")] == 0.5  # no positives: the default
    pred = vuln.decide(probs, thr)
    assert vuln.f1_scores(y, pred)["per_class"]["access-control"]["f1"] == 1.0
    nothing = vuln.decide(np.full((1, 6), 0.01), [0.5] * 6)
    assert nothing.sum() == 1  # every file gets a label


def test_errors_by_class_lists_misses_and_false_alarms_most_confident_first():
    y = np.zeros((5, 6), bool)
    y[[0, 1, 2], AC] = True
    probs = np.full((5, 6), 0.1)
    probs[:, AC] = [0.9, 0.2, 0.05, 0.7, 0.95]
    pred = probs >= 0.5
    names = [f"F{i}.sol" for i in range(5)]
    e = vuln.errors_by_class(y, pred, probs, names)
    assert e["access-control"] == {"n_missed": 2, "n_false_alarms": 2, "missed": [["F2.sol", 0.05], ["F1.sol", 0.2]],
                                   "false_alarms": [["F4.sol", 0.95], ["F3.sol", 0.7]]}
    assert e["safe"] == {"n_missed": 0, "n_false_alarms": 0, "missed": [], "false_alarms": []}
    capped = vuln.errors_by_class(y, pred, probs, names, limit=1)["access-control"]
    assert capped["n_missed"] == 2 and capped["missed"] == [["F2.sol", 0.05]]


def test_scores_by_group_averages_only_the_classes_a_group_has():
    y = np.zeros((4, 6), bool)
    y[[0, 1], AC] = True      # group a: access-control on both files
    y[[2, 3], SAFE] = True    # group b: safe on both
    ours, theirs = y.copy(), y.copy()
    theirs[1, AC] = False     # TF-IDF misses one access-control file of a and calls it safe
    theirs[1, SAFE] = True
    g = vuln.scores_by_group(y, ours, theirs, ["a", "a", "b", "b"])
    assert list(g) == ["a", "b"] and g["a"]["n"] == 2
    assert g["a"]["macro_f1_present"] == 1.0 == g["a"]["micro_f1"]  # one class present, not a sixth of it
    assert g["a"]["baseline_tfidf_macro_f1_present"] == pytest.approx(2 / 3)  # access-control: tp 1, fn 1
    assert g["a"]["baseline_tfidf_micro_f1"] == pytest.approx(2 / 4)  # tp 1, fp 1, fn 1
    assert g["b"]["baseline_tfidf_macro_f1_present"] == 1.0


def test_bootstrap_resamples_whole_source_files():
    """Ten source files with an injected variant each; TF-IDF-like predictions wrong on both rows of one file. Ours
    scores higher exactly in the resamples that draw that file: 1 - 0.9**10 of them by file, where resampling rows
    (1 - 0.9**20) would say 0.88."""
    groups = [f"pkg/F{i}.sol" + tag for i in range(10) for tag in ("", " +reentrancy")]
    assert vuln.source_of({"name": groups[1]}) == "pkg/F0.sol"
    y = np.zeros((20, 6), bool)
    y[1::2, vuln.CLASSES.index("reentrancy")] = True
    y[0::2, SAFE] = True
    theirs = y.copy()
    theirs[[6, 7]] = ~y[[6, 7]]  # file F3: both rows wrong
    b = vuln.bootstrap_macro_f1(y, y, theirs, [vuln.source_of({"name": g}) for g in groups], n_resamples=4000)
    assert b["n_groups"] == 10 and b["diff_ci95"][0] == 0 < b["diff_ci95"][1]
    assert b["share_ours_higher"] == pytest.approx(1 - 0.9 ** 10, abs=0.03)
    assert b["ours_ci95"] == [pytest.approx(2 / 6)] * 2  # perfect on the two classes there are
    assert b == vuln.bootstrap_macro_f1(y, y, theirs, [vuln.source_of({"name": g}) for g in groups], n_resamples=4000)
    assert vuln.new_protocols_test(labels_path=ROOT / "no-such-labels.json") is None  # no label file: no split
    same = vuln.bootstrap_macro_f1(y, theirs, theirs, groups, n_resamples=200)
    assert same["diff_ci95"] == [0.0, 0.0] and same["share_ours_higher"] == 0.0


# ------------------------------------------------------------------------------------------------ injection names
def test_injected_names_are_natural_varied_and_never_collide():
    host = "pragma solidity ^0.8.0;\ncontract Host {\n    uint256 internal n;\n}\n"
    names = set()
    for i in range(12):
        text = host.replace("Host", f"Host{i}")
        for kind in inject.KINDS[:5]:
            out, _ = inject.inject(text, kind, "0.8.37")
            assert "_solgpt_inj" not in out and "solgpt" not in out.lower()
            picked = inject.pick_names(text, kind)
            names |= set(picked.values())
            assert all(n in inject.NAMES[r] for r, n in picked.items())
            assert inject.inject(text, kind, "0.8.37") == (out, _)  # deterministic
    assert len(names) > 15
    # every name the file already uses is skipped
    taken = host.replace("uint256 internal n;", " ".join(f"uint256 {n};" for n in inject.NAMES["owner"][:-1]))
    assert inject.pick_names(taken, "tx-origin")["owner"] == inject.NAMES["owner"][-1]
    full = host.replace("uint256 internal n;", " ".join(f"uint256 {n};" for n in inject.NAMES["owner"]))
    assert inject.pick_names(full, "tx-origin")["owner"] not in inject.NAMES["owner"]


# ------------------------------------------------------------------------------------------------ classify.py
@pytest.fixture(scope="module")
def classifier(tmp_path_factory, hub):
    out = tmp_path_factory.mktemp("clf")
    assert train_here(out, hub, "--max_iters=2", "--lr_decay_iters=2") == 0
    return out / "model.pt"


def run_classify(*args):
    return subprocess.run([sys.executable, str(ROOT / "classify.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_classify_json_schema_and_directories(tmp_path, classifier):
    (tmp_path / "sub").mkdir()
    (tmp_path / "A.sol").write_text(contract(1, True))
    (tmp_path / "sub" / "B.sol").write_text(contract(2, False) + "\ncontract Other { uint256 x; }\n")
    (tmp_path / "notes.txt").write_text("not solidity")
    proc = run_classify(f"--ckpt={classifier}", "--json", tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(tmp_path / "A.sol"), str(tmp_path / "sub" / "B.sol")]
    for r in rows:
        assert list(r["probabilities"]) == list(vuln.CLASSES)
        assert all(0 <= p <= 1 for p in r["probabilities"].values())
        assert r["labels"] and set(r["labels"]) <= set(vuln.CLASSES)
        assert set(r["contracts"]) == set(r["labels"]) - {"safe"}
        assert all(c in ("C1", "C2", "Other") for c in r["contracts"].values())
    text = run_classify(f"--ckpt={classifier}", tmp_path / "A.sol")
    assert text.returncode == 0 and text.stdout.startswith(f"{tmp_path / 'A.sol'}: ")
    assert all(f"  {c}" in text.stdout for c in vuln.CLASSES)


def commented(text):
    """text with NatSpec before every line and a trailing comment after it: more tokens, other window cuts."""
    return "".join(f"/// @notice line {i} says // nothing and /* neither */ this\n{line}  // {i}\n"
                   for i, line in enumerate(text.splitlines()))


def test_a_classifier_trained_without_comments_reads_every_file_without_them(tmp_path, hub, classifier):
    from tokenizer import get_dataset_tokenizer
    assert train_here(tmp_path / "out", hub, "--max_iters=2", "--lr_decay_iters=2", "--cls_strip_comments=True") == 0
    text = contract(7, True, lines=12)
    assert vuln.model_text(commented(text), True) == vuln.model_text(text, True) != commented(text)
    for path, strips in ((tmp_path / "out" / "model.pt", True), (classifier, False)):
        model, ckpt = classify.load_classifier(path)
        assert ckpt["strip_comments"] is strips and ckpt["extra_train"] is False  # recorded for bench.py
        tok = get_dataset_tokenizer(ckpt)
        plain, noisy = (classify.classify_text(model, ckpt, tok, t) for t in (text, commented(text)))
        assert (plain == noisy) is strips  # the same verdict to the last digit only when comments are dropped
        assert plain["contracts"] == noisy["contracts"]


def test_classify_into_a_pipe_closed_early_ends_quietly(tmp_path, classifier):
    for i in range(40):  # more output than a pipe buffers, so a write after the reader left is certain
        (tmp_path / f"C{i:02d}.sol").write_text(contract(i, i % 2 == 0))
    proc = subprocess.Popen([sys.executable, str(ROOT / "classify.py"), f"--ckpt={classifier}", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141 and first.startswith(str(tmp_path / "C00.sol").encode())
    assert err == b"", err.decode()


def test_classify_errors_are_one_line(tmp_path, classifier):
    missing = run_classify(f"--ckpt={classifier}", tmp_path / "nope.sol")
    assert (missing.returncode, missing.stderr) == (1, f"error: {tmp_path / 'nope.sol'}: no such file or directory\n")
    (tmp_path / "bad.sol").write_bytes(b"contract \xff\xfe {}")
    bad = run_classify(f"--ckpt={classifier}", tmp_path / "bad.sol")
    assert bad.returncode == 1 and bad.stderr.startswith(f"error: cannot read {tmp_path / 'bad.sol'}: UnicodeDecodeError")
    assert bad.stderr.count("\n") == 1
    lm = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=64))
    ckpt_io.atomic_torch_save(ckpt_io.model_checkpoint(lm, lm.config.__dict__, "solgpt", "0" * 64, 1, 1.0),
                              tmp_path / "lm.pt")
    (tmp_path / "A.sol").write_text(contract(1, True))
    not_clf = run_classify(f"--ckpt={tmp_path / 'lm.pt'}", tmp_path / "A.sol")
    assert (not_clf.returncode, not_clf.stderr) == (1, (
        f"error: {tmp_path / 'lm.pt'} is a language model, not a classifier: fine-tune one with python train.py "
        f"config/finetune_vuln_cpu.py --init_from={tmp_path / 'lm.pt'} and pass its model.pt\n"))
    none = run_classify(f"--ckpt={tmp_path / 'missing.pt'}", tmp_path / "A.sol")
    assert none.returncode == 1 and none.stderr.startswith(f"error: checkpoint {tmp_path / 'missing.pt'} not found")


# ------------------------------------------------------------------------------------------------ bench.py
def test_bench_vuln_section_on_the_hub_fixture(tmp_path, classifier, hub, monkeypatch, capsys):
    import bench
    splits, asked = vuln.hub_splits(hub), []
    monkeypatch.setattr(vuln, "offline_splits", lambda *a, **k: asked.append(k) or splits)  # labels.json needs tarballs
    monkeypatch.setattr(vuln, "new_protocols_test", lambda *a, **k: splits["test"][:6])
    report = bench.bench_vuln(classifier, "cpu", hub_path=hub)
    assert report["new_protocols"]["n_test"] == 6 and report["new_protocols"]["n_train"] == len(splits["train"])
    ckpt = torch.load(classifier, map_location="cpu", weights_only=True)
    torch.save({**ckpt, "extra_train": True}, tmp_path / "extra.pt")  # as if trained with --cls_extra_train=True
    bench.bench_vuln(tmp_path / "extra.pt", "cpu")
    assert [k["extra_train"] for k in asked] == [False, True]  # TF-IDF is fitted on the files the model was

    def unreachable(*a, **k):
        raise vuln.DataError("npm pack @x/y@1.0.0 failed: offline")
    monkeypatch.setattr(vuln, "new_protocols_test", unreachable)  # the second split cannot sink the first
    offline = bench.bench_vuln(classifier, "cpu")
    assert offline["new_protocols"] == {"skipped": "npm pack @x/y@1.0.0 failed: offline"}
    assert offline["macro_f1"] == report["macro_f1"]
    assert report["same_split_as_training"] is True and report["hub_test"]["same_split_as_training"] is True
    moved = {**splits, "train": splits["train"][1:], "val": splits["val"] + splits["train"][:1]}  # labels changed
    monkeypatch.setattr(vuln, "offline_splits", lambda *a, **k: moved)
    monkeypatch.setattr(vuln, "new_protocols_test", lambda *a, **k: splits["test"][:6])
    capsys.readouterr()
    changed = bench.bench_vuln(classifier, "cpu", hub_path=hub)
    assert changed["same_split_as_training"] is False and changed["hub_test"]["same_split_as_training"] is True
    assert changed["new_protocols"]["same_split_as_training"] is False  # the held-out split's train/val: said once
    assert capsys.readouterr().err.count("the train/validation files differ") == 1
    assert "differs from the classifier's: retrain it" in bench.table(
        {"machine": {"gpu": None, "cpu": "x", "cores": 2, "torch": "2.13"}, "vuln": changed})
    shown = bench.table({"machine": {"gpu": None, "cpu": "x", "cores": 2, "torch": "2.13"}, "vuln": offline})
    assert report["iter_num"] == report["thresholds_iter"] == 2 and "vuln thresholds" not in shown
    stale = {**offline, "thresholds_iter": 0}  # what a run stopped between evaluations reports
    assert "tuned at iter 0, weights from iter 2: finish the run with --init_from=resume" in bench.table(
        {"machine": {"gpu": None, "cpu": "x", "cores": 2, "torch": "2.13"}, "vuln": stale})
    assert [line.split("|")[2].strip() for line in shown.splitlines() if "vuln new protocols" in line] == [
        "skipped: npm pack @x/y@1.0.0 failed: offline"]
    for part in (report, report["hub_test"]):
        assert part["n_test"] == 8 and set(part["per_class"]) == set(vuln.CLASSES)
        lo, hi = part["macro_f1_minus_tfidf_ci95"]
        assert lo <= hi and part["bootstrap"]["n_groups"] == 8  # every Hub contract its own source
        assert part["macro_f1_ci95"][0] <= part["macro_f1_ci95"][1] and 0 <= part["share_resamples_above_tfidf"] <= 1
        assert sum(g["n"] for g in part["by_project"].values()) == part["n_test"] == 8  # a contract each
        for c, x in part["per_class"].items():  # the files named wrong add up to what the F1 counts
            err, tp = part["errors"][c], round(x["recall"] * x["support"])
            assert err["n_missed"] == x["support"] - tp == len(err["missed"])
            if x["precision"]:
                assert err["n_false_alarms"] == round(tp / x["precision"]) - tp == len(err["false_alarms"])
        for key in ("micro_f1", "macro_f1", "baseline_majority_macro_f1", "baseline_tfidf_macro_f1", "macro_ap",
                    "baseline_tfidf_macro_ap"):
            assert 0 <= part[key] <= 1
        # only access-control and safe have positives: the other classes have no average precision
        assert [c for c, x in part["per_class"].items() if x["average_precision"] is not None] == [
            "access-control", "safe"]
    # the fixture is separable by `tx.origin`: TF-IDF finds it; the majority (safe everywhere) gets safe's F1 / 6
    assert report["baseline_tfidf_macro_f1"] == pytest.approx((1 + 1) / 6)
    assert {c: (e["n_missed"], e["n_false_alarms"]) for c, e in report["baseline_tfidf_errors"].items()} == {
        c: (0, 0) for c in vuln.CLASSES}  # perfect: nothing missed, no false alarm
    assert report["baseline_tfidf_macro_ap"] == pytest.approx(1.0)  # a perfect ranking of both classes
    assert report["baseline_majority_macro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 4) / 6)


def test_contract_spans_regex_fallback_matches_tree_sitter():
    import solsyntax
    text = (contract(1, True) + "\n/* contract NotOne { } */\nlibrary L { function f() internal pure {} }\n"
            "interface I { function g() external; }\n")
    spans = solsyntax.contract_spans(text)
    assert [s[0] for s in spans] == ["C1", "L", "I"]
    assert [s[0] for s in solsyntax._contract_spans_regex(text)][:1] == ["C1"]
    assert solsyntax._contract_spans_regex(text)[0] == spans[0]


def test_ddp_two_processes_match_one(tmp_path, hub):
    """gloo DDP with 2 ranks draws the files one process with the same global batch draws: same losses."""
    args = [*TINY, f"--cls_hub_path={hub}", "--batch_size=2", "--gradient_accumulation_steps=2", "--max_iters=4",
            "--lr_decay_iters=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "train.py"), *args, f"--out_dir={tmp_path / 'ddp'}"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert train_here(tmp_path / "one", hub, "--batch_size=2", "--gradient_accumulation_steps=2", "--max_iters=4",
                      "--lr_decay_iters=4") == 0
    loss = lambda d: [r["loss"] for r in metrics(d) if "loss" in r]  # noqa: E731
    assert loss(tmp_path / "ddp") == pytest.approx(loss(tmp_path / "one"), rel=1e-5)
