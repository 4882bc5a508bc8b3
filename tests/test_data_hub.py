"""The two Hugging Face prepare scripts, through their real `datasets.load_dataset` calls on local Parquet repos
laid out like the Hub's, with the held-out registry's default-corpus part made from a fixture package corpus."""
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_data_fixtures import (REPO, contract, held_out_env, load_script, near_copy, read_docs,  # noqa: F401
                                stand_in)

from data import heldout, hub, slither, tokens

SEYYED = "data/seyyedaliayati-solidity-dataset/prepare.py"
SLITHER = "data/slither-audited-smart-contracts/prepare.py"
SEYYED_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: eval
    path: data/eval-*
  - split: test
    path: data/test-*
---
"""


def seyyed_row(i, repo, lang="Solidity", text=None):
    text = text if text is not None else contract(300 + i).replace("/// @notice", f"// repo: {repo}\n/// @notice")
    return {"hash": f"h{i}", "size": len(text), "ext": "sol" if lang == "Solidity" else "js", "lang": lang,
            "is_test": False, "repo_id": i // 3, "repo_name": repo, "repo_head": "abc123",
            "repo_path": f"contracts/C{i}.sol", "content": text, "license": "mit"}


def make_seyyed_repo(root):
    """Local copy laid out like the Hub repo: README configs + data/{train,eval,test}-*.parquet."""
    rows = {"train": [], "eval": [], "test": []}
    for i in range(36):
        repo = f"owner/repo{i // 3}"                        # 12 repositories, 3 files each
        rows[("train", "train", "eval", "test")[i % 4]].append(seyyed_row(i, repo))  # a repo spans HF splits
    rows["train"].append(seyyed_row(100, "owner/js", lang="JavaScript", text="console.log(1)"))
    rows["test"].append(seyyed_row(101, "owner/repo0", text=rows["train"][0]["content"]))  # exact copy
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text(SEYYED_README)
    for split, rs in rows.items():
        pq.write_table(pa.Table.from_pylist(rs), root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def slither_row(address, text, labels=(0,)):
    return {"address": address, "source_code": text, "bytecode": "0x6080", "slither": list(labels)}


def make_slither_repo(root):
    """Like the Hub's refs/convert/parquet: <config>/<split>/0000.parquet with the multilabel schema; big- and
    small-multilabel complete (train/validation/test), all-multilabel only a partial-train/ folder."""
    ev_val, ev_test = contract(900), contract(901)
    tables = {
        ("big-multilabel", "train"): [slither_row(f"0x{i:040x}", contract(500 + i)) for i in range(1, 30)] + [
            slither_row("0xeval0", contract(950)),          # an evaluation address (other case), other content
            slither_row("0xCOPY", "\n" + ev_test),          # an evaluation contract under another address
            slither_row("0xNEAR", near_copy(contract(902))),  # a near copy of one
            slither_row("0xFLAT1", contract(40) + ev_val + contract(41)),  # a flattened file containing one
            slither_row("0xDUP", contract(505)),            # an ordinary exact duplicate
        ],
        ("big-multilabel", "validation"): [slither_row("0xEVAL0", ev_val, (1, 3))],
        ("big-multilabel", "test"): [slither_row("0xEVAL1", ev_test, (2,))],
        ("small-multilabel", "train"): [slither_row("0xS0", contract(2))],
        ("small-multilabel", "validation"): [slither_row("0xEVAL2", contract(902))],
        ("small-multilabel", "test"): [slither_row("0xEVAL3", contract(903))],
        ("all-multilabel", "partial-train"): [slither_row(f"0x{i:040x}", contract(500 + i)) for i in range(1, 12)],
    }
    for (config, split), rows in tables.items():
        d = root / config / split
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "0000.parquet")
    return root


def run_slither(src, out, held, *extra):
    load_script(SLITHER).main(["--local_path", str(src), "--out_dir", str(out), "--held_out_dir", str(held),
                               "--val_fraction", "0.2", "--quiet", *extra])
    return tokens.read_meta(out)


@pytest.fixture
def held(tmp_path, monkeypatch):
    return held_out_env(tmp_path / "packages", monkeypatch)


# ------------------------------------------------------------------------------------------------ seyyedaliayati
def run_seyyed(src, out, held):
    load_script(SEYYED).main(["--local_path", str(src), "--out_dir", str(out), "--val_fraction", "0.3",
                              "--held_out_dir", str(held), "--quiet"])
    return tokens.read_meta(out)


def test_seyyed_streams_filters_and_splits_by_repository(tmp_path, stand_in, held):
    src = make_seyyed_repo(tmp_path / "hub")
    out = tmp_path / "out"
    meta = run_seyyed(src, out, held)
    assert meta["filtered"] == {"not_solidity": 1}
    assert meta["dedup"]["removed"] == {"exact_duplicate": 1}
    assert meta["sources"][0]["splits"] == ["train", "eval", "test"]
    repos = {s: {t.split("// repo: ")[1].split("\n")[0] for t in read_docs(out, s, meta)} for s in ("train", "val")}
    assert repos["train"] and repos["val"] and not repos["train"] & repos["val"]
    assert len(repos["train"] | repos["val"]) == 12
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 36


def test_seyyed_without_token_says_how_to_get_access(tmp_path):
    """End to end in a clean environment: no token anywhere, offline; one line, exit code 1, nothing touched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, str(REPO / SEYYED), "--out_dir", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    assert r.stderr == ("error: seyyedaliayati/solidity-dataset is gated on the Hugging Face Hub and needs a token: "
                        f"{hub.TOKEN_HELP}, and accept the dataset's terms at "
                        "https://huggingface.co/datasets/seyyedaliayati/solidity-dataset\n")
    assert not (tmp_path / "out").exists()


def test_seyyed_token_without_accepted_terms(tmp_path, stand_in, monkeypatch):
    from datasets.exceptions import DatasetNotFoundError
    import datasets

    def refuse(path, **kw):
        raise DatasetNotFoundError(f"Dataset '{path}' is a gated dataset on the Hub. Visit the dataset page at "
                                   f"https://huggingface.co/datasets/{path} to ask for access.")
    monkeypatch.setattr(hub, "hf_token", lambda: "hf_test")
    monkeypatch.setattr(datasets, "load_dataset", refuse)
    with pytest.raises(SystemExit) as e:
        load_script(SEYYED).main(["--out_dir", str(tmp_path)])
    assert str(e.value) == ("error: seyyedaliayati/solidity-dataset is gated on the Hugging Face Hub and your token "
                            "has no access: accept the dataset's terms at "
                            "https://huggingface.co/datasets/seyyedaliayati/solidity-dataset (logged in as the "
                            "token's user), then rerun")


def test_seyyed_drops_training_files_that_copy_or_contain_held_out_ones(tmp_path, stand_in, held):
    """The registry spans datasets: default-corpus val files and Slither evaluation contracts stay out of seyyed's
    training split as exact copies, near copies and inside flattened files."""
    slither.held_out_part(held, local_path=make_slither_repo(tmp_path / "slither"))
    src = make_seyyed_repo(tmp_path / "hub")
    leaks = [contract(21),                                     # the default corpus's val file G1, copied
             near_copy(contract(903)),                         # a Slither test contract, nearly copied
             contract(70) + contract(20) + contract(71)]       # a flattened file holding val file G0
    table = pq.read_table(src / "data" / "train-00000-of-00001.parquet").to_pylist()
    table += [seyyed_row(200 + k, "owner/leak", text=t) for k, t in enumerate(leaks)]  # owner/leak hashes to train
    pq.write_table(pa.Table.from_pylist(table), src / "data" / "train-00000-of-00001.parquet")
    meta = run_seyyed(src, tmp_path / "out", held)
    removed = meta["dedup"]["removed"]
    assert {k: v for k, v in removed.items() if k.startswith("held_out")} == \
        {"held_out_exact": 1, "held_out_near": 1, "held_out_contains": 1}
    assert set(meta["held_out"]) == {"solidity-packages-val", "slither-eval"}
    assert meta["held_out"]["solidity-packages-val"]["documents"] == 3 and meta["held_out"]["slither-eval"]["documents"] == 4
    docs = read_docs(tmp_path / "out", "train", meta) + read_docs(tmp_path / "out", "val", meta)
    assert not any(f"contract C{i} " in t for t in docs for i in (20, 21, 903))


def test_gated_message_only_on_a_real_gated_signal(monkeypatch):
    import datasets
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    def fails_with(exc):
        def load(path, **kw):
            raise exc
        monkeypatch.setattr(datasets, "load_dataset", load)
        with pytest.raises(SystemExit) as e:
            hub.load_streaming("some/repo", gated=False)
        return str(e.value)

    monkeypatch.setattr(hub, "hf_token", lambda: "hf_test")
    assert fails_with(RuntimeError("the error propagated from an aggregated worker")) == \
        "error: could not load some/repo: the error propagated from an aggregated worker"
    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/api/datasets/some/repo"))
    assert fails_with(HfHubHTTPError("401 Client Error: Unauthorized", response=response)) == (
        "error: the Hugging Face Hub refused your token for some/repo (401 Unauthorized): the token is invalid or "
        f"expired; {hub.TOKEN_HELP}")
    from datasets.exceptions import DatasetNotFoundError
    assert fails_with(DatasetNotFoundError("Dataset 'some/repo' is a gated dataset on the Hub. You must be "
                                           "authenticated to access it.")).startswith(
        "error: the Hugging Face Hub refused your token for some/repo (401 Unauthorized)")


# ------------------------------------------------------------------------------------------------ slither
def test_slither_holds_out_evaluation_contracts(tmp_path, stand_in, monkeypatch, held):
    import datasets
    calls, real = [], datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda path, **kw: calls.append(kw) or real(path, **kw))
    src = make_slither_repo(tmp_path / "hub")
    meta = run_slither(src, tmp_path / "out", held)           # default config: big-multilabel
    # the Parquet export's call: one config per data_dir, the convert revision, streaming
    assert {c["data_dir"] for c in calls} == {"big-multilabel", "small-multilabel"}
    assert all(c["revision"] == "refs/convert/parquet" and c["streaming"] for c in calls)
    assert meta["sources"][0]["config"] == "big-multilabel" and meta["sources"][0]["splits"] == list(slither.SPLITS)
    assert meta["sources"][0]["partial"] is False
    assert meta["filtered"] == {"held_out_address": 1}
    assert meta["held_out"]["slither-eval"]["documents"] == 4
    assert meta["dedup"]["removed"] == {"held_out_exact": 1, "held_out_near": 1, "held_out_contains": 1,
                                        "exact_duplicate": 1}
    docs = read_docs(tmp_path / "out", "train", meta) + read_docs(tmp_path / "out", "val", meta)
    assert len(docs) == 29
    assert not any(f"contract C{i} " in t for t in docs for i in (900, 901, 902, 903, 950))
    assert meta["splits"]["val"]["documents"] > 0 and meta["dedup"]["train_val_near_dup_rate"] == 0


def test_slither_refuses_a_partial_conversion_unless_asked(tmp_path, stand_in, held, capsys):
    src = make_slither_repo(tmp_path / "hub")
    with pytest.raises(SystemExit) as e:
        run_slither(src, tmp_path / "out", held, "--config", "all-multilabel")
    assert str(e.value) == (f"error: {slither.REPO_ID} all-multilabel ({src}) has only a partial Parquet conversion "
                            f"(partial-train: a truncated prefix of the data): use --config big-multilabel "
                            f"(complete), or --allow_partial to take the prefix")
    assert not (tmp_path / "out").exists()
    meta = run_slither(src, tmp_path / "out", held, "--config", "all-multilabel", "--allow_partial")
    assert meta["sources"][0]["partial"] is True and meta["sources"][0]["splits"] == ["partial-train"]
    assert "is a PARTIAL Parquet conversion" in capsys.readouterr().err
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 11


def test_slither_missing_or_empty_split_is_one_line(tmp_path, stand_in, held):
    src = make_slither_repo(tmp_path / "hub")
    shutil.rmtree(src / "big-multilabel" / "test")
    with pytest.raises(SystemExit) as e:
        run_slither(src, tmp_path / "out", held)
    assert str(e.value) == (f"error: {slither.REPO_ID} big-multilabel ({src}) has no test split (found: train, "
                            f"validation): the download is incomplete or the layout changed")
    src = make_slither_repo(tmp_path / "hub2")
    (src / "small-multilabel" / "validation" / "0000.parquet").unlink()
    with pytest.raises(SystemExit) as e:
        run_slither(src, tmp_path / "out", held)
    assert str(e.value) == (f"error: {slither.REPO_ID} small-multilabel ({src}) has no Parquet files in validation: "
                            f"the download is incomplete or the layout changed")
    assert not (tmp_path / "out").exists() and not heldout.part_path(held, "slither-eval").exists()
    # a split whose files hold no rows: the same kind of error once streaming has read it all
    with pytest.raises(SystemExit) as e:
        list(slither.rows({"test": []}, "big-multilabel", "test"))
    assert str(e.value) == (f"error: {slither.REPO_ID} big-multilabel/test is empty: the download is incomplete or "
                            f"the layout changed")


def test_slither_bad_config_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        load_script(SLITHER).main(["--config", "huge"])
    assert e.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_offline_hub_error_is_one_line(monkeypatch):
    import datasets

    def offline(path, **kw):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SystemExit) as e:
        hub.load_streaming("mwritescode/slither-audited-smart-contracts", data_dir="all-multilabel")
    assert str(e.value).startswith("error: could not reach the Hugging Face Hub for mwritescode/slither")


def test_slither_layout_from_the_hub_listing(monkeypatch):
    """The Hub path of the layout check: folders and Parquet files from list_repo_tree, at the resolved sha."""
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    listing = {"big-multilabel": ["big-multilabel/train", "big-multilabel/train/0000.parquet",
                                  "big-multilabel/train/0001.parquet", "big-multilabel/validation",
                                  "big-multilabel/validation/0000.parquet", "big-multilabel/test"],
               "all-multilabel": ["all-multilabel/partial-train", "all-multilabel/partial-train/0000.parquet"]}
    seen = []

    class FakeApi:
        def list_repo_tree(self, repo_id, path_in_repo, repo_type, revision, recursive):
            seen.append((repo_id, path_in_repo, repo_type, revision, recursive))
            return [RepoFile(path=p, size=1, oid="x") if p.endswith(".parquet") else RepoFolder(path=p, oid="y")
                    for p in listing[path_in_repo]]
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert slither.split_folders("big-multilabel", None, "abc123") == {"test": 0, "train": 2, "validation": 1}
    assert seen == [(slither.REPO_ID, "big-multilabel", "dataset", "abc123", True)]
    with pytest.raises(SystemExit, match=r"big-multilabel \(abc123\) has no Parquet files in test"):
        slither.check_layout("big-multilabel", None, "abc123")
    with pytest.raises(SystemExit, match="has only a partial Parquet conversion"):
        slither.check_layout("all-multilabel", None, "abc123")
