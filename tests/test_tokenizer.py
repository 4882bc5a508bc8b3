"""tokenizer/: round-trip on arbitrary text and bytes, stable special tokens, errors, committed-file integrity, and
reproducible training."""
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenizer as tkmod
from tokenizer import SPECIAL_TOKENS, TokenizerError, get_tokenizer, tokenizer_hash
from tokenizer.compare import bytes_per_token
from tokenizer.train_tokenizer import PATTERNS, train_ranks, write_tokenizer

REPO = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def test_default_is_solgpt_and_cached(tok):
    assert tok.name == "solgpt"
    assert get_tokenizer("solgpt") is tok is get_tokenizer(None)


@FAST
@given(st.text(max_size=2000))
def test_roundtrip_arbitrary_text(text):
    tok = get_tokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < tok.n_vocab for i in ids)
    assert tok.decode(ids) == text


@FAST
@given(st.binary(max_size=2000))
def test_roundtrip_arbitrary_bytes_replace(data):
    tok = get_tokenizer()
    text = data.decode("utf-8", errors="replace")
    assert tok.decode(tok.encode(text)) == text


@FAST
@given(st.binary(max_size=1000))
def test_surrogateescape_text_never_raises(data):
    # Lone surrogates are not UTF-8; tiktoken replaces each with U+FFFD, the rest comes back exactly.
    tok = get_tokenizer()
    text = data.decode("utf-8", errors="surrogateescape")
    assert tok.decode(tok.encode(text)) == re.sub("[\ud800-\udfff]", "\ufffd", text)


@FAST
@given(st.lists(st.sampled_from(list(" \n\t{}();=_$abcuint256/*@<|>") + list(SPECIAL_TOKENS) + ["    ", "\r\n"]),
               max_size=200).map("".join))
def test_roundtrip_solidity_like_text(text):
    tok = get_tokenizer()
    assert tok.decode(tok.encode(text)) == text


@FAST
@given(st.lists(st.integers(min_value=0, max_value=16389), max_size=200))
def test_decode_any_valid_ids(ids):
    tok = get_tokenizer()
    assert isinstance(tok.decode([i % tok.n_vocab for i in ids]), str)


def test_special_tokens_stable_and_distinct(tok):
    n_regular = tok.n_vocab - len(SPECIAL_TOKENS)
    assert list(tok.special_tokens) == list(SPECIAL_TOKENS)
    assert list(tok.special_tokens.values()) == list(range(n_regular, n_regular + len(SPECIAL_TOKENS)))
    assert tok.eot_token == tok.special_tokens["<|endoftext|>"] == n_regular
    assert n_regular == 16384
    for s, i in tok.special_tokens.items():
        assert tok.decode([i]) == s


def test_special_strings_are_plain_text(tok):
    text = "a<|endoftext|>b<|fim_prefix|><|pad|><|cls|>"
    ids = tok.encode(text)
    assert not set(ids) & set(tok.special_tokens.values())
    assert tok.decode(ids) == text
    assert tok.encode_batch([text, "x"]) == [ids, tok.encode("x")]


def test_solidity_units_are_single_tokens(tok):
    # What the split pattern is for: indentation + keyword, types with digits, NatSpec prefixes.
    for piece in ["\n        require", " uint256", " bytes32", " memory", "\n     * @notice", "\n    function"]:
        assert len(tok.encode(piece)) == 1, piece


def test_unknown_name_lists_valid_names():
    with pytest.raises(TokenizerError, match=r"unknown tokenizer 'nope'; valid names: .*solgpt"):
        get_tokenizer("nope")
    with pytest.raises(TokenizerError):
        get_tokenizer("../tokenizer/solgpt")


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base"])
def test_tiktoken_download_failure_is_one_line(name, monkeypatch):
    """Whatever stops tiktoken's download becomes one line that names the tokenizer and the offline default."""
    import tiktoken

    def offline(encoding_name):
        raise ConnectionError(f"HTTPSConnectionPool(host='openaipublic.blob.core.windows.net'): Max retries\n"
                              f"exceeded ({encoding_name})")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(TokenizerError) as e:
        tkmod.load_tokenizer(name)
    assert str(e.value) == (
        f"tokenizer {name!r} needs tiktoken's downloaded files, which could not be fetched: "
        f"HTTPSConnectionPool(host='openaipublic.blob.core.windows.net'): Max retries exceeded ({name}); use the "
        f"default 'solgpt' tokenizer, or run tiktoken.get_encoding({name!r}) once with network access (files are "
        f"cached in $TIKTOKEN_CACHE_DIR)")


def test_committed_ranks_file_matches_module(tok):
    data = (REPO / "tokenizer" / "solgpt.tiktoken").read_bytes()
    meta = json.loads((REPO / "tokenizer" / "solgpt.json").read_text())
    sha = hashlib.sha256(data).hexdigest()
    assert tok.ranks_sha256 == sha == meta["ranks_sha256"]
    assert tok.pattern == meta["pattern"] == PATTERNS[meta["pattern_name"]]
    assert tok.hash == tokenizer_hash(sha, tok.pattern, tok.special_tokens)
    assert len(data) < 320_000


TINY = ["pragma solidity ^0.8.20;\ncontract A {\n    uint256 x;\n    function f() external { x += 1; }\n}\n"] * 3 + \
       ["// SPDX-License-Identifier: MIT\n/// @notice hi\nlibrary L { function g(bytes32 b) internal {} }\n", "é漢🙂"]


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_training_is_reproducible(tmp_path, monkeypatch, pattern):
    a = train_ranks(TINY, 300, PATTERNS[pattern])
    assert a == train_ranks(list(TINY), 300, PATTERNS[pattern]) and len(a) == 300
    for d in ("a", "b"):
        write_tokenizer(a, PATTERNS[pattern], "tiny", tmp_path / d, {"pattern_name": pattern})
    assert (tmp_path / "a" / "tiny.tiktoken").read_bytes() == (tmp_path / "b" / "tiny.tiktoken").read_bytes()
    # a written tokenizer loads by name from the tokenizer folder
    monkeypatch.setattr(tkmod, "TOKENIZER_DIR", tmp_path / "a")
    tiny = tkmod.load_tokenizer("tiny")
    assert tiny.n_vocab == 306 and tiny.eot_token == 300
    assert all(tiny.decode(tiny.encode(t)) == t for t in TINY)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_rustbpe_and_tiktoken_split_alike(pattern):
    # The pattern is run by rustbpe when training and by tiktoken when encoding: both must cut text the same way.
    import rustbpe

    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(TINY), 300, pattern=PATTERNS[pattern])
    tiny = tkmod.from_ranks("tiny", {bytes(t): r for t, r in bpe.get_mergeable_ranks()}, PATTERNS[pattern])
    for text in TINY + ["\n\n    /**\n     * @dev x\n     */\r\n\tfoo_1 = 0x1F * 3;  \n", "a  b\u00a0c\u2028d  "]:
        assert tiny.encode(text) == bpe.encode(text), text


def test_committed_ranks_reproduce_from_the_corpus():
    """train_tokenizer.py on the default corpus gives the committed file bit for bit (needs the npm tarballs; the
    same pipeline runs everywhere on the fixture corpus below)."""
    from data import packages
    from tokenizer import train_tokenizer as tt

    missing = [p["name"] for p in packages.load_package_list()["packages"]
               if not (packages.TARBALL_DIR / packages.tarball_name(p["name"], p["version"])).exists()]
    if missing:  # offline and fast: never fetch with npm from a test
        pytest.skip(f"npm tarballs not cached ({', '.join(missing[:3])}...): run python data/solidity-packages/prepare.py")
    meta = json.loads((REPO / "tokenizer" / "solgpt.json").read_text())
    splits, val_packages = tt.corpus_documents()
    assert val_packages == meta["held_out_packages"]
    assert tt.corpus_sha256(splits["train"]) == meta["corpus_sha256"], "corpus changed: rerun train_tokenizer.py"
    ranks = train_ranks(splits["train"], meta["vocab_size"], PATTERNS[meta["pattern_name"]])
    assert hashlib.sha256(tkmod.dump_ranks(ranks)).hexdigest() == meta["ranks_sha256"]


def test_corrupt_ranks_file_is_detected(tmp_path, monkeypatch):
    ranks = train_ranks(TINY, 260, PATTERNS["solidity"])
    path = write_tokenizer(ranks, PATTERNS["solidity"], "tiny", tmp_path, {})
    path.write_bytes(path.read_bytes().replace(b" 259\n", b" 258\n"))
    monkeypatch.setattr(tkmod, "TOKENIZER_DIR", tmp_path)
    with pytest.raises(TokenizerError, match="does not match"):
        tkmod.load_tokenizer("tiny")


def test_bytes_per_token():
    # bytes + one merge "ab": "abab ab" -> ab|ab| |ab (4 tokens, 7 bytes); "é" -> 2 byte tokens (2 bytes)
    ranks = {bytes([i]): i for i in range(256)}
    ranks[b"ab"] = 256
    tiny = tkmod.from_ranks("tiny", ranks, r"\S+|\s+")
    assert bytes_per_token(tiny, ["abab ab", "é"]) == pytest.approx(9 / 6)


FIXTURE = REPO / "tests" / "fixtures" / "tokenizer-corpus"


def pack_fixture_corpus(cache: Path):
    """npm-style tarballs of the fixture's package folders, as `npm pack` would lay them out."""
    from data import packages
    from test_data_fixtures import make_tarball

    for pkg in json.loads((FIXTURE / "packages.json").read_text())["packages"]:
        folder = FIXTURE / pkg["name"]
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.sol"))}
        make_tarball(cache / packages.tarball_name(pkg["name"], pkg["version"]), pkg["name"], pkg["version"], files)


def test_retrain_on_the_fixture_corpus_is_bit_for_bit(tmp_path):
    """The whole path of tokenizer/train_tokenizer.py (packages, licence filter, dedup, held-out val, BPE, files)
    on a corpus that ships with the tests reproduces the recorded tokenizer exactly."""
    from tokenizer import train_tokenizer as tt

    pack_fixture_corpus(tmp_path / "cache")
    tt.main(["--packages", str(FIXTURE / "packages.json"), "--tarballs", str(tmp_path / "cache"),
             "--held_out_dir", str(tmp_path / "held-out"), "--out_dir", str(tmp_path / "tok"), "--name", "fixture",
             "--vocab_size", "600"])
    meta = json.loads((tmp_path / "tok" / "fixture.json").read_text())
    # by hand: 10 OpenZeppelin files, ContextCopy.sol an exact copy of Context.sol; @prb/math's file held out
    assert meta["training_documents"] == 9 and meta["held_out_packages"] == ["fixture-prb"]
    expected = json.loads((FIXTURE / "expected.json").read_text())   # recorded by the first run of this test
    assert {k: meta[k] for k in expected} == expected
    assert hashlib.sha256((tmp_path / "tok" / "fixture.tiktoken").read_bytes()).hexdigest() == expected["ranks_sha256"]


@pytest.mark.parametrize("script", ["train_tokenizer.py", "compare.py"])
def test_cli_help(script):
    r = subprocess.run([sys.executable, str(REPO / "tokenizer" / script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout


def test_compare_cli_bad_pattern_is_one_line():
    r = subprocess.run([sys.executable, str(REPO / "tokenizer" / "compare.py"), "--patterns=nope"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "unknown pattern" in r.stderr
