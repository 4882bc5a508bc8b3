"""The two Hugging Face prepare scripts, through their real `datasets.load_dataset` calls on local Parquet repos."""
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from test_data_fixtures import REPO, contract, load_script, near_copy, read_docs, stand_in  # noqa: F401

from data import corpus, hub

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
    text = text if text is not None else contract(i).replace("/// @notice", f"// repo: {repo}\n/// @notice")
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
    """Like the Hub's refs/convert/parquet: <config>/<split>/0000.parquet, multilabel schema."""
    ev_val, ev_test = contract(900), contract(901)
    tables = {
        ("big-multilabel", "train"): [slither_row("0xB0", contract(1))],
        ("big-multilabel", "validation"): [slither_row("0xEVAL0", ev_val, (1, 3))],
        ("big-multilabel", "test"): [slither_row("0xEVAL1", ev_test, (2,))],
        ("small-multilabel", "train"): [slither_row("0xS0", contract(2))],
        ("small-multilabel", "validation"): [slither_row("0xEVAL2", contract(902))],
        ("small-multilabel", "test"): [slither_row("0xEVAL3", contract(903))],
        ("all-multilabel", "train"): [slither_row(f"0x{i:040x}", contract(i)) for i in range(1, 30)] + [
            slither_row("0xeval0", contract(950)),          # an evaluation address (other case), other content
            slither_row("0xCOPY", "\n" + ev_test),          # an evaluation contract under another address
            slither_row("0xNEAR", near_copy(contract(902))),  # a near copy of one
            slither_row("0xDUP", contract(5)),              # an ordinary exact duplicate
        ],
    }
    for (config, split), rows in tables.items():
        d = root / config / split
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), d / "0000.parquet")
    return root


# ------------------------------------------------------------------------------------------------ seyyedaliayati
def test_seyyed_streams_filters_and_splits_by_repository(tmp_path, stand_in):
    src = make_seyyed_repo(tmp_path / "hub")
    out = tmp_path / "out"
    load_script(SEYYED).main(["--local_path", str(src), "--out_dir", str(out), "--val_fraction", "0.3", "--quiet"])
    meta = corpus.read_meta(out)
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


# ------------------------------------------------------------------------------------------------ slither
def test_slither_holds_out_evaluation_contracts(tmp_path, stand_in, monkeypatch):
    import datasets
    calls, real = [], datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda path, **kw: calls.append(kw) or real(path, **kw))
    src = make_slither_repo(tmp_path / "hub")
    out = tmp_path / "out"
    load_script(SLITHER).main(["--local_path", str(src), "--out_dir", str(out), "--val_fraction", "0.2", "--quiet"])
    meta = corpus.read_meta(out)
    # the Parquet export's call: one config per data_dir, the convert revision, streaming
    assert {c["data_dir"] for c in calls} == {"all-multilabel", "big-multilabel", "small-multilabel"}
    assert all(c["revision"] == "refs/convert/parquet" and c["streaming"] for c in calls)
    assert meta["filtered"] == {"held_out_address": 1}
    d = meta["dedup"]
    assert d["held_out_documents"] == 4
    assert d["removed"] == {"excluded_exact": 1, "excluded_near": 1, "exact_duplicate": 1}
    docs = read_docs(out, "train", meta) + read_docs(out, "val", meta)
    assert len(docs) == 29
    assert not any(f"contract C{i} " in t for t in docs for i in (900, 901, 902, 903, 950))
    assert meta["splits"]["val"]["documents"] > 0 and d["train_val_near_dup_rate"] == 0


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
