"""dataloader.py: reproducible, resumable, rank-disjoint batches; mixtures; clear errors for bad data."""

import json

import numpy as np
import pytest
import torch

from core_data import make_dataset
from dataloader import BatchSampler, DataError, Prefetcher, parse_mixture


@pytest.fixture()
def root(tmp_path):
    make_dataset(tmp_path, "a", n_train=5000, n_val=1000, seed=1)
    make_dataset(tmp_path, "b", n_train=5000, n_val=1000, seed=2, dtype="uint32")
    return tmp_path


def sampler(root, spec="a", **kw):
    return BatchSampler(spec, block_size=16, batch_size=4, data_root=root, **kw)


def test_batches_are_shifted_windows_of_the_file(root):
    s = sampler(root)
    x, y = s.get_batch("train")
    data = np.fromfile(root / "a" / "train.bin", dtype=np.uint16)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    row = x[0].numpy()
    starts = [i for i in range(len(data) - 16) if (data[i:i + 16] == row).all()]
    assert starts and (data[starts[0] + 1:starts[0] + 17] == y[0].numpy()).all()


def test_state_restore_redraws_the_same_batches(root):
    s = sampler(root)
    for _ in range(3):
        s.get_batch("train")
    state = s.state_dict()
    expected = [s.get_batch("train")[0] for _ in range(3)]
    t = sampler(root)
    t.load_state_dict(state)
    assert all(torch.equal(a, t.get_batch("train")[0]) for a in expected)


def test_ranks_draw_disjoint_slices_of_the_single_process_stream(root):
    single = sampler(root)
    r0, r1 = sampler(root, rank=0, world_size=2), sampler(root, rank=1, world_size=2)
    for _ in range(3):
        a, b = r0.get_batch("train")[0], r1.get_batch("train")[0]
        assert not torch.equal(a, b)
        assert torch.equal(a, single.get_batch("train")[0]) and torch.equal(b, single.get_batch("train")[0])


def test_eval_batches_are_fixed_and_leave_training_stream_alone(root):
    s = sampler(root)
    v1 = s.get_batch("val", index=0)[0]
    first = s.get_batch("train")[0]
    assert torch.equal(v1, s.get_batch("val", index=0)[0])
    assert torch.equal(first, sampler(root).get_batch("train")[0])


def test_mixture_weights(root):
    assert parse_mixture("a:3,b:1") == [("a", 0.75), ("b", 0.25)]
    np.full(5000, 7, dtype=np.uint32).tofile(root / "b" / "train.bin")  # b's windows are recognisable
    s = BatchSampler("a:0.7,b:0.3", block_size=16, batch_size=1000, data_root=root)
    x, _ = s.get_batch("train")
    from_b = (x == 7).all(dim=1).float().mean().item()
    assert 0.25 < from_b < 0.35
    with pytest.raises(DataError, match="not a number"):
        parse_mixture("a:x")
    with pytest.raises(DataError, match="not a number"):  # a trailing colon is a typo, not the dataset 'a:'
        parse_mixture("a:")


def test_incomplete_or_missing_data_is_reported(root):
    with pytest.raises(DataError, match=r"data/c/meta.json not found|c/meta.json not found"):
        sampler(root, "c")
    (root / "a" / "val.bin").write_bytes(b"\0" * 10)
    with pytest.raises(DataError) as exc:
        sampler(root)
    msg = str(exc.value)
    assert "val.bin is incomplete or missing (10 bytes, expected 2000): run python data/a/prepare.py" in msg
    meta = json.loads((root / "b" / "meta.json").read_text())
    meta["format"] = "something-else"
    (root / "b" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format"):
        sampler(root, "b")


def test_block_size_larger_than_split_is_reported(root):
    with pytest.raises(DataError, match="lower --block_size"):
        BatchSampler("a", block_size=2000, batch_size=1, data_root=root)


def test_every_token_can_be_a_target_including_the_last(root):
    np.arange(18, dtype=np.uint16).tofile(root / "a" / "val.bin")  # block 16 + 2: windows start at 0 or 1
    meta = json.loads((root / "a" / "meta.json").read_text())
    meta["splits"]["val"]["tokens"] = 18
    (root / "a" / "meta.json").write_text(json.dumps(meta))
    s = sampler(root)
    last_targets = {int(t) for k in range(20) for t in s.get_batch("val", index=k)[1][:, -1]}
    assert last_targets == {16, 17}  # 17, the split's last token, is a target too


def test_prefetcher_state_counts_only_batches_handed_out(root):
    s = sampler(root)
    batches = Prefetcher(s)
    handed = [next(batches)[0] for _ in range(3)]
    state = batches.state_dict()
    assert state["step"] == 3 and s.step == 4  # one more drawn ahead
    t = sampler(root)
    t.load_state_dict(state)
    resumed = Prefetcher(t)
    assert torch.equal(next(resumed)[0], next(batches)[0])  # the prefetched batch is redrawn, not skipped
    assert torch.equal(handed[0], sampler(root).get_batch("train")[0])


def test_eval_train_batches_differ_from_training_batches(root):
    s = sampler(root)
    assert not torch.equal(s.get_batch("train", index=0)[0], sampler(root).get_batch("train")[0])


def test_resume_refuses_other_seed_dataset_or_uneven_world_size(root):
    s = sampler(root)
    for _ in range(3):
        s.get_batch("train")
    state = s.state_dict()
    assert state["step"] == 3 and state["seed"] == 1337 and state["dataset"] == "a:1.0"
    with pytest.raises(DataError, match="--seed=1337"):
        sampler(root, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="--dataset=a:1.0"):
        sampler(root, "b").load_state_dict(state)
    with pytest.raises(DataError, match="cannot split evenly"):
        sampler(root, world_size=2).load_state_dict(state)
    s.get_batch("train")
    r1 = sampler(root, rank=1, world_size=2)
    r1.load_state_dict(s.state_dict())  # 4 drawn: 2 processes continue with global micro-batches 4, 5
    expected = [s.get_batch("train")[0] for _ in range(2)][1]
    assert torch.equal(r1.get_batch("train")[0], expected)


def test_seed_and_split_change_the_random_numbers(root):
    a = sampler(root).get_batch("train")[0]
    assert not torch.equal(a, sampler(root, seed=7).get_batch("train")[0])
    u = [sampler(root)._generator(stream, 0).initial_seed() for stream in ("train", "val", "train_eval")]
    assert len({x % 2**32 for x in u}) == 3  # the part torch's CPU generator actually uses
