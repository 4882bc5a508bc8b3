"""export.py: transformers folders and GGUF files that give solGPT's logits, tokens and generations."""
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import export
from checkpoint import atomic_torch_save, model_checkpoint
from tokenizer import SPECIAL_TOKENS, get_tokenizer

transformers = pytest.importorskip("transformers", reason="export tests need pip install -r requirements-export.txt")
pytest.importorskip("safetensors", reason="export tests need pip install -r requirements-export.txt")

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4  # fp32, max |logit difference|
BASE = dict(block_size=64, vocab_size=16448, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True,
            pos_encoding="learned")
LLAMA = dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False, rope_theta=10000.0)
# Every architecture variant model.py has (or will have) that maps onto a standard transformers one.
VARIANTS = {
    "gpt2": ("gpt2", {}),
    "gpt2-nobias": ("gpt2", dict(bias=False)),
    "gpt2-untied-hidden": ("gpt2", dict(tie_embeddings=False, mlp_hidden=96)),
    "llama": ("llama", LLAMA),
    "llama-bias-untied-theta": ("llama", dict(LLAMA, bias=True, tie_embeddings=False, rope_theta=500.0)),
    "qwen3": ("qwen3", dict(LLAMA, qk_norm=True)),
    "qwen3-untied": ("qwen3", dict(LLAMA, qk_norm=True, tie_embeddings=False)),
}
ALL_FIELDS = dict(norm="layernorm", mlp="gelu", qk_norm=False, tie_embeddings=True, rope_theta=10000.0, mlp_hidden=0)


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def model_args_of(kw):
    return {**BASE, **ALL_FIELDS, **kw}


# ------------------------------------------------------------------------------ a spec-built reference (HELPERS.md)
def spec_state_dict(a, seed=0):
    """Random weights under the parameter names model.py uses, shaped as the config says (independent of model.py)."""
    g = torch.Generator().manual_seed(seed)
    C, V, L, hd = a["n_embd"], a["vocab_size"], a["n_layer"], a["n_embd"] // a["n_head"]
    H = a["mlp_hidden"] or (4 * C if a["mlp"] != "swiglu" else 32 * math.ceil(round(8 / 3 * C) / 32))
    rnd = lambda *shape, s=0.1: torch.randn(*shape, generator=g) * s  # noqa: E731
    gain = lambda n: 1 + rnd(n)  # noqa: E731  (not ones: a gain mapped to the wrong place must show)
    layernorm = a["norm"] == "layernorm"
    sd = {"transformer.wte.weight": rnd(V, C, s=0.5)}
    if a["pos_encoding"] == "learned":
        sd["transformer.wpe.weight"] = rnd(a["block_size"], C, s=0.5)

    def norm(name, n=C):
        sd[f"{name}.weight"] = gain(n)
        if a["bias"] and layernorm:
            sd[f"{name}.bias"] = rnd(n)

    def linear(name, n_in, n_out):
        sd[f"{name}.weight"] = rnd(n_out, n_in, s=1 / math.sqrt(n_in))
        if a["bias"]:
            sd[f"{name}.bias"] = rnd(n_out)

    for i in range(L):
        p = f"transformer.h.{i}"
        norm(f"{p}.ln_1"), norm(f"{p}.ln_2")
        linear(f"{p}.attn.c_attn", C, 3 * C), linear(f"{p}.attn.c_proj", C, C)
        if a["qk_norm"]:
            norm(f"{p}.attn.q_norm", hd), norm(f"{p}.attn.k_norm", hd)
        linear(f"{p}.mlp.c_fc", C, H), linear(f"{p}.mlp.c_proj", H, C)
        if a["mlp"] == "swiglu":
            linear(f"{p}.mlp.c_gate", C, H)
    norm("transformer.ln_f")
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if a["tie_embeddings"] else rnd(V, C, s=0.5)
    return sd


def reference_logits(sd, a, idx):
    """The forward pass HELPERS.md specifies, written out from the spec (not from model.py or transformers)."""
    B, T = idx.shape
    C, nh = a["n_embd"], a["n_head"]
    hd = C // nh

    def norm(x, name, n=None):
        w, b = sd[f"{name}.weight"], sd.get(f"{name}.bias")
        if a["norm"] == "layernorm":
            return F.layer_norm(x, (x.size(-1),), w, b, 1e-5)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def lin(x, name):
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    def rope(x):  # (B, nh, T, hd), Hugging Face Llama's rotate_half convention
        inv = 1.0 / a["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)
        freqs = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        rot = torch.cat((-x[..., hd // 2:], x[..., :hd // 2]), dim=-1)
        return x * emb.cos() + rot * emb.sin()

    x = sd["transformer.wte.weight"][idx]
    if a["pos_encoding"] == "learned":
        x = x + sd["transformer.wpe.weight"][:T]
    for i in range(a["n_layer"]):
        p = f"transformer.h.{i}"
        q, k, v = lin(norm(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hd) for t in (q, k, v))
        if a["qk_norm"]:
            q, k = norm(q, f"{p}.attn.q_norm"), norm(k, f"{p}.attn.k_norm")
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if a["pos_encoding"] == "rope":
            q, k = rope(q), rope(k)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        att = att.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        x = x + lin((att @ v).transpose(1, 2).reshape(B, T, C), f"{p}.attn.c_proj")
        h = norm(x, f"{p}.ln_2")
        if a["mlp"] == "swiglu":
            h = F.silu(lin(h, f"{p}.mlp.c_gate")) * lin(h, f"{p}.mlp.c_fc")
        else:
            h = F.gelu(lin(h, f"{p}.mlp.c_fc"))
        x = x + lin(h, f"{p}.mlp.c_proj")
    return F.linear(norm(x, "transformer.ln_f"), sd["lm_head.weight"])


# ------------------------------------------------------------------------------ helpers
def ckpt_of(a, sd, tok):
    return {"model_args": a, "model": sd, "tokenizer": tok.name, "tokenizer_hash": tok.hash, "iter_num": 0,
            "val_loss": None}


def hf_load(path):
    model, info = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                                    output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return model.eval()


def solgpt_model(kw, seed=0):
    """model.py's GPT for a variant, weights perturbed (gains not 1, biases not 0)."""
    from model import GPT, GPTConfig

    cfg = GPTConfig(**{**BASE, **kw})
    model = GPT(cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval(), asdict(cfg)


def random_ids(T, seed=1):
    return torch.randint(0, 16390, (2, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ logits
@pytest.mark.parametrize("variant", VARIANTS)
def test_export_matches_the_specified_forward(variant, tok, tmp_path):
    """Hand-built weights under model.py's names: the exported transformers model computes the spec's logits."""
    arch, kw = VARIANTS[variant]
    a = model_args_of(kw)
    sd = spec_state_dict(a)
    assert export.write_hf_folder(tmp_path / "hf", ckpt_of(a, sd, tok), tok, "float32") == arch
    hf = hf_load(tmp_path / "hf")
    assert type(hf).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                                 "qwen3": "Qwen3ForCausalLM"}[arch]
    idx = random_ids(a["block_size"])
    with torch.no_grad():
        want, got = reference_logits(sd, a, idx), hf(idx).logits
    assert want.abs().max() > 1  # the comparison is not between two near-zero tensors
    assert (want - got).abs().max().item() <= TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_logits_equal_solgpt(variant, tok, tmp_path):
    arch, kw = VARIANTS[variant]
    model, a = solgpt_model(kw)
    path = tmp_path / "model.pt"
    atomic_torch_save(model_checkpoint(model, a, tok.name, tok.hash, 7, 1.0), path)
    assert export.main([f"--ckpt={path}", f"--out={tmp_path / 'hf'}"]) == 0
    hf = hf_load(tmp_path / "hf")
    idx = random_ids(a["block_size"])
    with torch.no_grad():
        ours, _ = model(idx, targets=idx)
        theirs = hf(idx).logits
    assert (ours - theirs).abs().max().item() <= TOL
    # the reference agrees too: model.py implements the spec the export maps from
    sd = {k: v for k, v in model.state_dict().items()}
    sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
    with torch.no_grad():
        assert (reference_logits(sd, model_args_of(a), idx) - ours).abs().max().item() <= TOL


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generate_gives_the_same_tokens(variant, tok, tmp_path):
    arch, kw = VARIANTS[variant]
    model, a = solgpt_model(kw, seed=3)
    path = tmp_path / "model.pt"
    atomic_torch_save(model_checkpoint(model, a, tok.name, tok.hash, 7, 1.0), path)
    export.main([f"--ckpt={path}", f"--out={tmp_path / 'hf'}", "--verify=False"])
    hf = hf_load(tmp_path / "hf")
    prompt = [tok.eot_token] + tok.encode("pragma solidity ^0.8.20;\ncontract A {")
    x = torch.tensor([prompt])
    ours = model.generate(x, 40, temperature=0, eot_token=tok.eot_token, vocab_limit=tok.n_vocab)
    theirs = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=40, do_sample=False)
    assert ours[0].tolist() == theirs[0].tolist()
    assert ours.size(1) > len(prompt)


def test_padding_ids_are_never_generated(tok, tmp_path):
    """vocab_size is padded past the tokenizer: generation_config suppresses those ids, as sample.py's vocab_limit."""
    a = model_args_of({})
    sd = spec_state_dict(a)
    sd["transformer.wte.weight"][tok.n_vocab + 5] *= 100  # make a padding id the model's favourite
    export.write_hf_folder(tmp_path / "hf", ckpt_of(a, sd, tok), tok, "float32")
    hf = hf_load(tmp_path / "hf")
    x = torch.tensor([[tok.eot_token]])
    assert hf(x).logits[0, -1].argmax().item() == tok.n_vocab + 5
    out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=5, do_sample=False)[0, 1:].tolist()
    assert out and all(i < tok.n_vocab for i in out)


def test_bfloat16_export_is_close(tok, tmp_path):
    a = model_args_of({})
    sd = spec_state_dict(a)
    export.write_hf_folder(tmp_path / "hf", ckpt_of(a, sd, tok), tok, "bfloat16")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    from safetensors import safe_open
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


# ------------------------------------------------------------------------------ tokenizer
FIXTURE_DOCS = [
    "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\n\n/// @notice A vault\ncontract Vault {\n"
    "    mapping(address => uint256) public balanceOf;\n    /**\n     * @dev deposit\n     */\n"
    "    function deposit() external payable { balanceOf[msg.sender] += msg.value; }\n}\n",
    "contract A{uint x=0x1F;string s=\"héllo wörld, 日本語 \\u00e9\";}\r\n\t\t// trailing  \n\n\n",
    "  \u00a0\u2028\u3000 \u0085 x  \n",  # Unicode whitespace the two regex engines must agree on
    "😀 emoji in a comment 🚀 $_ident9 _x $ 123abc ٣٤ ²",
    "",
    " ",
    "a" * 300,
]


@pytest.fixture(scope="module")
def hf_tok(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    a = model_args_of({})
    export.write_hf_folder(path / "hf", ckpt_of(a, spec_state_dict(a), tok), tok, "float32")
    return transformers.AutoTokenizer.from_pretrained(path / "hf")


def fixture_documents():
    from test_data_fixtures import contract

    return FIXTURE_DOCS + [contract(i, lines=8) for i in range(5)]


def test_autotokenizer_ids_equal_ours_on_fixture_documents(tok, hf_tok):
    for doc in fixture_documents():
        ids = hf_tok(doc)["input_ids"]
        assert ids == tok.encode(doc), doc[:60]
        assert hf_tok.decode(ids) == doc


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_autotokenizer_ids_equal_ours_on_any_text(tok, hf_tok, text):
    if any(s in text for s in SPECIAL_TOKENS):
        return  # special-token strings: see test_special_token_strings
    assert hf_tok(text)["input_ids"] == tok.encode(text)


def test_special_tokens_keep_their_ids_and_fim_is_named(tok, hf_tok):
    for name, i in tok.special_tokens.items():
        assert hf_tok.convert_tokens_to_ids(name) == i
        assert i in hf_tok.all_special_ids
    assert [tok.special_tokens[n] for n in SPECIAL_TOKENS] == list(range(16384, 16390))
    assert (hf_tok.bos_token, hf_tok.eos_token, hf_tok.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    assert (hf_tok.fim_prefix_token, hf_tok.fim_middle_token, hf_tok.fim_suffix_token) == \
        ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")
    assert len(hf_tok) == tok.n_vocab == 16390


def test_special_token_strings(tok, hf_tok):
    """transformers maps a special token's text to its id (FIM prompts as strings); split_special_tokens=True
    gives solGPT's own behaviour (text is text)."""
    text = "a<|endoftext|>b<|fim_middle|>"
    assert hf_tok(text)["input_ids"] == tok.encode("a") + [16384] + tok.encode("b") + [16386]
    assert hf_tok(text, split_special_tokens=True)["input_ids"] == tok.encode(text)


def test_merges_are_recovered_from_ranks():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"ab": 256, b"abc": 257, b"bc": 258, b"xbc": 259})
    assert export.recover_merges(ranks) == [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"x", b"bc")]
    bad = {**ranks, b"qrs": 260}  # three bytes with no two-token history
    with pytest.raises(export.ExportError, match="not a merge of two lower-ranked tokens"):
        export.recover_merges(bad)


# ------------------------------------------------------------------------------ errors, files
def run_main(args):
    with pytest.raises(SystemExit) as e:
        export.main(args)
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


@pytest.mark.parametrize("kw,want", [
    (dict(pos_encoding="alibi"), "pos_encoding='alibi' norm='layernorm' mlp='gelu' qk_norm=False has no standard"),
    (dict(LLAMA, mlp="relu2"), "mlp='relu2'"),
    (dict(pos_encoding="learned", norm="rmsnorm"), "norm='rmsnorm'"),
    (dict(LLAMA, qk_norm=True, bias=True), "bias=True with qk_norm is not exportable"),
])
def test_unexportable_architecture_is_one_line_and_writes_nothing(kw, want, tok, tmp_path):
    a = model_args_of(kw)
    path = tmp_path / "model.pt"
    torch.save(ckpt_of(a, {"transformer.wte.weight": torch.zeros(2, 2)}, tok), path)
    msg = run_main([f"--ckpt={path}", f"--out={tmp_path / 'hf'}", f"--gguf={tmp_path / 'm.gguf'}"])
    assert want in msg and "exportable: learned+layernorm+gelu -> GPT-2" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_missing_checkpoint_and_nothing_to_do(tmp_path):
    assert "not found" in run_main([f"--ckpt={tmp_path / 'nope.pt'}", f"--out={tmp_path / 'hf'}"])
    assert run_main([f"--ckpt={tmp_path / 'nope.pt'}"]) == \
        "error: nothing to do: pass --out=FOLDER (transformers) and/or --gguf=FILE.gguf"


def test_missing_package_says_what_to_install():
    with pytest.raises(export.ExportError) as e:
        export.require("transformers", "no_such_package_xyz")
    assert str(e.value) == "export needs no_such_package_xyz: pip install -r requirements-export.txt"


def test_export_replaces_a_previous_export_but_not_other_folders(tok, tmp_path):
    a = model_args_of({})
    ckpt = ckpt_of(a, spec_state_dict(a), tok)
    export.write_hf_folder(tmp_path / "hf", ckpt, tok, "float32")
    (tmp_path / "hf" / "stale.txt").write_text("x")
    export.write_hf_folder(tmp_path / "hf", ckpt, tok, "float32")
    assert not (tmp_path / "hf" / "stale.txt").exists() and (tmp_path / "hf" / "model.safetensors").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(export.ExportError, match="is not a previous export"):
        export.write_hf_folder(tmp_path / "mine", ckpt, tok, "float32")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    (tmp_path / "a-file").write_text("keep")
    with pytest.raises(export.ExportError, match="is not a previous export"):
        export.write_hf_folder(tmp_path / "a-file", ckpt, tok, "float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "hf", "mine"]  # no temp folders left


def test_push_to_hub_offline_is_one_line(tok, tmp_path):
    model, a = solgpt_model({})
    path = tmp_path / "model.pt"
    atomic_torch_save(model_checkpoint(model, a, tok.name, tok.hash, 7, 1.0), path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "export.py", f"--ckpt={path}", f"--out={tmp_path / 'hf'}", "--verify=False",
                        "--push_to_hub=someone/solgpt-test"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1
    assert r.stderr.startswith("error: push to the Hugging Face Hub repo someone/solgpt-test failed (")
    assert len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "hf" / "model.safetensors").exists()  # the local export stays


# ------------------------------------------------------------------------------ GGUF
def test_gguf_reads_back(tok, tmp_path):
    gguf = pytest.importorskip("gguf", reason="GGUF tests need pip install -r requirements-export.txt")
    model, a = solgpt_model({})
    path = tmp_path / "model.pt"
    atomic_torch_save(model_checkpoint(model, a, tok.name, tok.hash, 7, 1.0), path)
    assert export.main([f"--ckpt={path}", f"--gguf={tmp_path / 'm.gguf'}"]) == 0
    r = gguf.GGUFReader(tmp_path / "m.gguf")
    field = lambda k: r.fields[k].contents()  # noqa: E731
    assert field("general.architecture") == "gpt2"
    assert (field("gpt2.block_count"), field("gpt2.embedding_length"), field("gpt2.context_length"),
            field("gpt2.attention.head_count"), field("gpt2.feed_forward_length")) == (2, 32, 64, 2, 128)
    names = {t.name: t for t in r.tensors}
    want = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias", "output.weight"}
    for i in range(2):
        want |= {f"blk.{i}.{n}.{w}" for n in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down")
                 for w in ("weight", "bias")}
    assert set(names) == want
    sd = model.state_dict()
    for name, src in (("token_embd.weight", "transformer.wte.weight"),
                      ("blk.1.attn_qkv.weight", "transformer.h.1.attn.c_attn.weight"),
                      ("blk.0.ffn_down.weight", "transformer.h.0.mlp.c_proj.weight"),
                      ("blk.0.attn_norm.bias", "transformer.h.0.ln_1.bias")):
        t = names[name]
        assert list(t.shape)[::-1] == list(sd[src].shape)  # GGUF lists dimensions innermost first
        assert torch.equal(torch.from_numpy(t.data.copy()).reshape(sd[src].shape), sd[src])
    tokens = field("tokenizer.ggml.tokens")
    assert field("tokenizer.ggml.model") == "gpt2" and len(tokens) == a["vocab_size"]
    assert tokens[16384:16390] == list(SPECIAL_TOKENS) and tokens[16390] == "[PAD16390]"
    assert tokens[ord("a")] == "a" and tokens[ord(" ")] == "Ġ"
    assert len(field("tokenizer.ggml.merges")) == 16384 - 256
    ids = [field(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "fim_pre", "fim_mid", "fim_suf")]
    assert ids == [16384, 16385, 16386, 16387]
    types = field("tokenizer.ggml.token_type")
    assert (types[0], types[16384], types[16447]) == (1, 3, 5)  # normal, control, unused


def test_gguf_refuses_other_architectures_in_one_line(tok, tmp_path):
    pytest.importorskip("gguf", reason="GGUF tests need pip install -r requirements-export.txt")
    a = model_args_of(LLAMA)
    path = tmp_path / "model.pt"
    torch.save(ckpt_of(a, spec_state_dict(a), tok), path)
    msg = run_main([f"--ckpt={path}", f"--gguf={tmp_path / 'm.gguf'}"])
    assert msg.startswith("error: GGUF export supports the GPT-2 architecture")
    assert not (tmp_path / "m.gguf").exists()
