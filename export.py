"""
Export a solGPT checkpoint to Hugging Face transformers (and GGUF for llama.cpp / Ollama):

    python export.py --ckpt=out-cpu/model.pt --out=hf/solgpt-cpu
    python export.py --ckpt=out-cpu/model.pt --out=hf/solgpt-cpu --gguf=hf/solgpt-cpu.gguf --push_to_hub=me/solgpt

The folder loads with AutoModelForCausalLM / AutoTokenizer, no trust_remote_code: model.safetensors, config.json of
the standard architecture the checkpoint is (learned positions + LayerNorm + GELU = GPT-2; RoPE + RMSNorm + SwiGLU =
Llama, with QK-norm = Qwen3), generation_config.json, and tokenizer.json converted from our tiktoken ranks (same
split regex, byte-level BPE merges recovered from the ranks, the six special tokens with their ids), so token ids
are the same as ours. Prompts start with <|endoftext|> in solGPT (a new file); prepend it in transformers too.
After writing, the export is loaded back with transformers and its logits compared with solGPT's (--verify).
Needs `pip install -r requirements-export.txt`.
"""

import functools
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoint as ckpt_io  # noqa: E402
from configurator import configure  # noqa: E402

DEFAULTS = dict(
    ckpt="out/model.pt",  # weights file to export (model.pt or best_model.pt)
    out="",  # output folder for transformers ("" = no transformers export, e.g. GGUF only)
    gguf="",  # also write a GGUF file here (llama.cpp / Ollama); GPT-2 architecture only
    dtype="float32",  # float32 | bfloat16 | float16 for the exported weights (GGUF: float32 | float16)
    verify=True,  # load the export back with transformers and compare its logits with solGPT's
    push_to_hub="",  # upload the folder to this Hugging Face repo (user/name); needs `huggingface-cli login`
    check_ids="",  # 'val' | 'train' | 'all': compare AutoTokenizer's ids with ours on the default corpus' documents
)
CHECK_SPLITS = {"val": "val", "train": "train", "all": None}
REQUIREMENTS = ("transformers", "safetensors", "tokenizers")
# Model config fields as model.py defines them; a checkpoint from before a field existed has its default.
ARCH_DEFAULTS = dict(pos_encoding="learned", norm="layernorm", mlp="gelu", qk_norm=False, tie_embeddings=True,
                     rope_theta=10000.0, bias=True, dropout=0.0)
EXPORTABLE = "learned+layernorm+gelu -> GPT-2, rope+rmsnorm+swiglu -> Llama, rope+rmsnorm+swiglu+qk_norm -> Qwen3"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LAYERNORM_EPS, RMSNORM_EPS = 1e-5, 1e-6  # model.py's


class ExportError(Exception):
    """The checkpoint cannot be exported as asked; str() is a one-line message that says what to do."""


def require(*packages):
    missing = [p for p in packages if _missing(p)]
    if missing:
        raise ExportError(f"export needs {', '.join(missing)}: pip install -r requirements-export.txt")


def _missing(package):
    try:
        __import__(package)
        return False
    except ImportError:
        return True


# ------------------------------------------------------------------------------------------------ architecture
def model_args(ckpt):
    """The checkpoint's model config with every field model.py knows, old checkpoints filled with defaults."""
    from model import GPTConfig

    args = dict(ARCH_DEFAULTS)
    args.update(asdict(GPTConfig.from_dict(ckpt["model_args"])))
    args.update(ckpt["model_args"])  # fields this model.py does not know still decide the architecture
    return args


def hf_architecture(a):
    """'gpt2' | 'llama' | 'qwen3' for a model config, or ExportError naming what has no standard equivalent."""
    arch = (a["pos_encoding"], a["norm"], a["mlp"])
    if arch == ("learned", "layernorm", "gelu") and not a["qk_norm"]:
        return "gpt2"
    if arch == ("rope", "rmsnorm", "swiglu"):
        if not a["qk_norm"]:
            return "llama"
        if not a["bias"]:
            return "qwen3"
        raise ExportError("bias=True with qk_norm is not exportable (Qwen3 has no MLP biases); "
                          f"exportable: {EXPORTABLE}")
    what = f"pos_encoding={a['pos_encoding']!r} norm={a['norm']!r} mlp={a['mlp']!r} qk_norm={a['qk_norm']}"
    raise ExportError(f"{what} has no standard transformers architecture; exportable: {EXPORTABLE}")


# ------------------------------------------------------------------------------------------------ weights
def hf_state_dict(sd, a, arch):
    """solGPT parameter names -> the transformers model's (tensors shared, not copied, where possible)."""
    sd = ckpt_io.strip_compile_prefix(sd)
    out = {}
    tied = a["tie_embeddings"] or "lm_head.weight" not in sd
    head = sd["transformer.wte.weight"] if tied else sd["lm_head.weight"]
    C = a["n_embd"]
    if arch == "gpt2":
        def linear(dst, src):  # GPT-2's Conv1D stores (in, out): the transpose of nn.Linear
            w = sd[f"{src}.weight"]
            out[f"{dst}.weight"] = w.t().contiguous()
            out[f"{dst}.bias"] = sd.get(f"{src}.bias", torch.zeros(w.shape[0], dtype=w.dtype))

        def norm(dst, src):
            w = sd[f"{src}.weight"]
            out[f"{dst}.weight"] = w
            out[f"{dst}.bias"] = sd.get(f"{src}.bias", torch.zeros_like(w))

        out["transformer.wte.weight"] = sd["transformer.wte.weight"]
        out["transformer.wpe.weight"] = sd["transformer.wpe.weight"]
        for i in range(a["n_layer"]):
            s, d = f"transformer.h.{i}", f"transformer.h.{i}"
            norm(f"{d}.ln_1", f"{s}.ln_1")
            linear(f"{d}.attn.c_attn", f"{s}.attn.c_attn")
            linear(f"{d}.attn.c_proj", f"{s}.attn.c_proj")
            norm(f"{d}.ln_2", f"{s}.ln_2")
            linear(f"{d}.mlp.c_fc", f"{s}.mlp.c_fc")
            linear(f"{d}.mlp.c_proj", f"{s}.mlp.c_proj")
        norm("transformer.ln_f", "transformer.ln_f")
    else:  # llama / qwen3: separate q, k, v; RoPE already in transformers' rotate_half convention
        def linear(dst, src, rows=slice(None)):
            out[f"{dst}.weight"] = sd[f"{src}.weight"][rows]
            if f"{src}.bias" in sd:
                out[f"{dst}.bias"] = sd[f"{src}.bias"][rows]

        out["model.embed_tokens.weight"] = sd["transformer.wte.weight"]
        for i in range(a["n_layer"]):
            s, d = f"transformer.h.{i}", f"model.layers.{i}"
            out[f"{d}.input_layernorm.weight"] = sd[f"{s}.ln_1.weight"]
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):  # c_attn is q|k|v stacked on the out dim
                linear(f"{d}.self_attn.{name}", f"{s}.attn.c_attn", slice(j * C, (j + 1) * C))
            linear(f"{d}.self_attn.o_proj", f"{s}.attn.c_proj")
            if arch == "qwen3":
                out[f"{d}.self_attn.q_norm.weight"] = sd[f"{s}.attn.q_norm.weight"]
                out[f"{d}.self_attn.k_norm.weight"] = sd[f"{s}.attn.k_norm.weight"]
            out[f"{d}.post_attention_layernorm.weight"] = sd[f"{s}.ln_2.weight"]
            linear(f"{d}.mlp.gate_proj", f"{s}.mlp.c_gate")
            linear(f"{d}.mlp.up_proj", f"{s}.mlp.c_fc")
            linear(f"{d}.mlp.down_proj", f"{s}.mlp.c_proj")
        out["model.norm.weight"] = sd["transformer.ln_f.weight"]
    if not tied:  # tied: transformers re-ties lm_head to the embedding on load; safetensors stores it once
        out["lm_head.weight"] = head
    return out


def hf_config(a, arch, sd, tok):
    """The transformers config (an object of the architecture's class) of a solGPT model."""
    import transformers

    tied = bool(a["tie_embeddings"] or "lm_head.weight" not in sd)
    common = dict(vocab_size=a["vocab_size"], tie_word_embeddings=tied,
                  bos_token_id=tok.eot_token, eos_token_id=tok.eot_token,
                  pad_token_id=tok.special_tokens["<|pad|>"])
    hidden = sd["transformer.h.0.mlp.c_fc.weight"].shape[0]
    if arch == "gpt2":
        return transformers.GPT2Config(
            n_positions=a["block_size"], n_embd=a["n_embd"], n_layer=a["n_layer"], n_head=a["n_head"], n_inner=hidden,
            activation_function="gelu",  # exact GELU, as nn.GELU() (GPT-2's own default is the tanh approximation)
            resid_pdrop=a["dropout"], embd_pdrop=a["dropout"], attn_pdrop=a["dropout"],
            layer_norm_epsilon=LAYERNORM_EPS, scale_attn_weights=True, **common)
    cls = transformers.LlamaConfig if arch == "llama" else transformers.Qwen3Config
    extra = dict(mlp_bias=bool(a["bias"])) if arch == "llama" else dict(use_sliding_window=False)
    return cls(hidden_size=a["n_embd"], intermediate_size=hidden, num_hidden_layers=a["n_layer"],
               num_attention_heads=a["n_head"], num_key_value_heads=a["n_head"], head_dim=a["n_embd"] // a["n_head"],
               hidden_act="silu", max_position_embeddings=a["block_size"], rms_norm_eps=RMSNORM_EPS,
               rope_theta=float(a["rope_theta"]), attention_bias=bool(a["bias"]), attention_dropout=a["dropout"],
               **extra, **common)


def generation_config(a, tok):
    """Stop at <|endoftext|> (the end of a file) and never emit the ids that only pad vocab_size (sample.py's
    vocab_limit); generate() with no prompt starts a new file from <|endoftext|>."""
    import transformers

    return transformers.GenerationConfig(
        bos_token_id=tok.eot_token, eos_token_id=tok.eot_token, pad_token_id=tok.special_tokens["<|pad|>"],
        suppress_tokens=list(range(tok.n_vocab, a["vocab_size"])) or None,
        do_sample=True, temperature=0.8, top_k=200, top_p=0.95)  # sample.py's defaults


# ------------------------------------------------------------------------------------------------ tokenizer
def bytes_to_unicode():
    """GPT-2's byte -> printable character map, which byte-level BPE vocabularies are written in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe_split(ranks, token, max_rank):
    """Apply tiktoken's merges of rank < max_rank to token's bytes: for a learned token, the two parts it was
    merged from (lowest rank first, as tiktoken encodes)."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[1]):
                best = (i, r)
        if best is None:
            return parts
        i = best[0]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]


@functools.lru_cache(maxsize=4)
def tokenizer_merges(tok):
    """recover_merges of a Tokenizer, computed once per export (the transformers folder and GGUF both need them)."""
    return recover_merges(tok._enc._mergeable_ranks)


def recover_merges(ranks):
    """Byte-level BPE merges, in rank order, from tiktoken ranks: merge k makes the token of rank 256 + k, so
    transformers' merge priority equals tiktoken's rank order and both produce the same ids."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = bpe_split(ranks, token, rank)
        if len(parts) != 2:
            raise ExportError(f"token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens; "
                              f"only BPE-trained tokenizers (tokenizer/train_tokenizer.py) can be exported")
        merges.append(tuple(parts))
    return merges


def hf_tokenizer(tok):
    """A tokenizers.Tokenizer giving exactly tok.encode's ids: same split regex, same merges, same specials."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    ranks = tok._enc._mergeable_ranks
    b2u = bytes_to_unicode()
    show = lambda bs: "".join(b2u[b] for b in bs)  # noqa: E731
    vocab = {show(t): r for t, r in ranks.items()}
    merges = [(show(x), show(y)) for x, y in tokenizer_merges(tok)]
    # ignore_merges: a whole pre-token already in the vocabulary is one token, as in tiktoken
    t = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    for name, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1]):
        t.add_special_tokens([AddedToken(name, special=True, normalized=False)])
        if t.token_to_id(name) != i:
            raise ExportError(f"special token {name} got id {t.token_to_id(name)} instead of {i}")
    return t


def tokenizer_config(a, tok):
    """tokenizer_config.json: the fast tokenizer class, special tokens by role, and the FIM tokens named."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": a["block_size"],
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>", "cls_token": "<|cls|>",
        "unk_token": None, "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "extra_special_tokens": {"fim_prefix_token": "<|fim_prefix|>", "fim_middle_token": "<|fim_middle|>",
                                 "fim_suffix_token": "<|fim_suffix|>"},
    }


# ------------------------------------------------------------------------------------------------ writing
def write_hf_folder(out, ckpt, tok, dtype):
    """Write the transformers folder through a temp folder renamed into place: never a half-written export."""
    from safetensors.torch import save_file

    a = model_args(ckpt)
    arch = hf_architecture(a)
    sd = ckpt["model"]
    tensors = {k: v.detach().to(DTYPES[dtype]).contiguous().clone() for k, v in hf_state_dict(sd, a, arch).items()}
    config = hf_config(a, arch, ckpt_io.strip_compile_prefix(sd), tok)
    config.dtype = dtype
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        generation_config(a, tok).save_pretrained(tmp)
        hf_tokenizer(tok).save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(a, tok), indent=2) + "\n")
        (tmp / "solgpt.json").write_text(json.dumps({"model_args": ckpt["model_args"], "tokenizer": tok.name,
                                                     "tokenizer_hash": tok.hash, "iter_num": ckpt.get("iter_num"),
                                                     "val_loss": ckpt.get("val_loss")}, indent=2) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return arch


def replace_dir(new, dst):
    """Move folder new to dst, replacing a previous export there (renames only, so dst is always whole)."""
    old = dst.with_name(f".{dst.name}.old{os.getpid()}")
    if dst.exists():
        if not dst.is_dir() or (not (dst / "config.json").exists() and any(dst.iterdir())):
            raise ExportError(f"{dst} exists and is not a previous export: pick another --out or remove it")
        dst.rename(old)
    new.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ GGUF
def gguf_tensors(sd, a):
    """llama.cpp's GPT-2 tensor names -> numpy arrays in nn.Linear (out, in) layout, which llama.cpp expects."""
    sd = ckpt_io.strip_compile_prefix(sd)

    def get(name, like=None):
        if name in sd:
            return sd[name]
        return torch.zeros(like.shape[0], dtype=like.dtype)  # bias=False: GPT-2 in llama.cpp has biases

    names = {"token_embd.weight": sd["transformer.wte.weight"], "position_embd.weight": sd["transformer.wpe.weight"]}
    for i in range(a["n_layer"]):
        s, d = f"transformer.h.{i}", f"blk.{i}"
        for src, dst in (("ln_1", "attn_norm"), ("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"),
                         ("ln_2", "ffn_norm"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")):
            w = sd[f"{s}.{src}.weight"]
            names[f"{d}.{dst}.weight"] = w
            names[f"{d}.{dst}.bias"] = get(f"{s}.{src}.bias", w)
    names["output_norm.weight"] = sd["transformer.ln_f.weight"]
    names["output_norm.bias"] = get("transformer.ln_f.bias", sd["transformer.ln_f.weight"])
    names["output.weight"] = sd.get("lm_head.weight", sd["transformer.wte.weight"])
    return names


def write_gguf(path, ckpt, tok, dtype):
    """A GGUF file (GPT-2 architecture, llama.cpp naming) with the tokenizer inside, written atomically."""
    import gguf

    a = model_args(ckpt)
    if hf_architecture(a) != "gpt2":
        raise ExportError("GGUF export supports the GPT-2 architecture (learned+layernorm+gelu) only; "
                          "use the transformers folder (--out) with llama.cpp's convert_hf_to_gguf.py for the others")
    if dtype not in ("float32", "float16"):
        raise ExportError(f"GGUF export writes float32 or float16, not {dtype}: pass --dtype=float16 or float32")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        w = gguf.GGUFWriter(tmp, "gpt2")
        w.add_name(f"solGPT {path.stem}")
        w.add_context_length(a["block_size"])
        w.add_embedding_length(a["n_embd"])
        w.add_feed_forward_length(ckpt["model"]["transformer.h.0.mlp.c_fc.weight"].shape[0])
        w.add_block_count(a["n_layer"])
        w.add_head_count(a["n_head"])
        w.add_layer_norm_eps(LAYERNORM_EPS)
        w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "float32" else gguf.LlamaFileType.MOSTLY_F16)
        add_gguf_tokenizer(w, tok, a["vocab_size"])
        for name, t in gguf_tensors(ckpt["model"], a).items():
            # 1-D gains and biases stay float32, as llama.cpp's own converter keeps them
            t = t.detach().float() if t.dim() == 1 or dtype == "float32" else t.detach().half()
            w.add_tensor(name, t.contiguous().numpy())
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def add_gguf_tokenizer(w, tok, vocab_size):
    """llama.cpp's byte-level BPE ("gpt2") tokenizer metadata: tokens, types, merges, special ids, FIM ids.
    The token list is padded to the model's vocab_size (llama.cpp requires equal sizes) with unused [PADi]."""
    import gguf

    b2u = bytes_to_unicode()
    ranks = tok._enc._mergeable_ranks
    tokens = [None] * vocab_size
    types = [gguf.TokenType.UNUSED] * vocab_size
    for t, r in ranks.items():
        tokens[r], types[r] = "".join(b2u[b] for b in t), gguf.TokenType.NORMAL
    for name, i in tok.special_tokens.items():
        tokens[i], types[i] = name, gguf.TokenType.CONTROL
    tokens = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    w.add_tokenizer_model("gpt2")
    # llama.cpp has no preset for our split regex: it pre-tokenizes with its default; ids we give it are exact
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_merges([" ".join("".join(b2u[b] for b in p) for p in m) for m in tokenizer_merges(tok)])
    w.add_bos_token_id(tok.eot_token)
    w.add_eos_token_id(tok.eot_token)
    w.add_pad_token_id(tok.special_tokens["<|pad|>"])
    w.add_add_bos_token(False)
    w.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, tok.special_tokens["<|fim_prefix|>"])
    w.add_uint32(gguf.Keys.Tokenizer.FIM_MID_ID, tok.special_tokens["<|fim_middle|>"])
    w.add_uint32(gguf.Keys.Tokenizer.FIM_SUF_ID, tok.special_tokens["<|fim_suffix|>"])


# ------------------------------------------------------------------------------------------------ checks, hub
def verify(out, path, tok):
    """Max |logit difference| between the export (loaded by transformers) and solGPT on one prompt, fp32."""
    from transformers import AutoModelForCausalLM

    try:
        model, _ = ckpt_io.load_model(path)
    except ckpt_io.CheckpointError as e:
        raise ExportError(f"{e} (--verify=False skips the check)") from None
    hf, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    bad = info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]
    if bad:
        raise ExportError(f"transformers did not load every weight of {out} ({sorted(bad)[:3]}...): please report it")
    prompt = [tok.eot_token] + tok.encode("pragma solidity ^0.8.20;\ncontract Vault {\n    uint256 total;\n")
    ids = torch.tensor([prompt[:model.config.block_size]])
    with torch.no_grad():
        ours, _ = model(ids, targets=ids)
        theirs = hf(ids).logits
    return (ours.float() - theirs.float()).abs().max().item()


def check_ids(out, split, tok):
    """(documents, identical, tokens, first differing document) of the default corpus (data/solidity-packages,
    fetching its npm tarballs if needed) tokenized by the exported tokenizer and by ours."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from data import packages as npm_packages

    hf = AutoTokenizer.from_pretrained(out)
    n = same = tokens = 0
    first_bad = None
    docs = npm_packages.iter_package_documents(CHECK_SPLITS[split])
    for label, path, text in tqdm(docs, desc=f"comparing token ids ({split})", unit=" docs", leave=False):
        ours = tok.encode(text)
        n, tokens = n + 1, tokens + len(ours)
        if hf(text, add_special_tokens=False)["input_ids"] == ours:
            same += 1
        elif first_bad is None:
            first_bad = f"{label}/{path}"
    return n, same, tokens, first_bad


def push(out, repo):
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(out), commit_message="solGPT export")
    except Exception as e:  # offline, not logged in, no permission: the hub's own message, on one line
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ExportError(f"push to the Hugging Face Hub repo {repo} failed ({reason}); check the network and "
                          f"`huggingface-cli login`, or upload {out} later") from None


def load_tokenizer(ckpt, path):
    from tokenizer import SPECIAL_TOKENS, TokenizerError, get_tokenizer

    try:
        tok = get_tokenizer(ckpt.get("tokenizer") or None)
    except TokenizerError as e:
        raise ExportError(str(e)) from None
    want = ckpt.get("tokenizer_hash")
    if want and tok.hash != want:
        raise ExportError(f"{path} was trained with a different {tok.name} tokenizer (hash {want[:12]}, installed "
                          f"{tok.hash[:12]}); use the tokenizer files it was trained with")
    if any(s not in tok.special_tokens for s in SPECIAL_TOKENS):
        raise ExportError(f"tokenizer {tok.name} lacks solGPT's special tokens; only solGPT tokenizers can be exported")
    return tok


def export(cfg):
    """Run the export described by cfg (DEFAULTS' keys); returns a dict of what was written, for the summary."""
    if not cfg["out"] and not cfg["gguf"]:
        raise ExportError("nothing to do: pass --out=FOLDER (transformers) and/or --gguf=FILE.gguf")
    if cfg["dtype"] not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {cfg['dtype']!r}")
    for key, what in (("push_to_hub", "uploads"), ("check_ids", "checks")):
        if cfg[key] and not cfg["out"]:
            raise ExportError(f"--{key} {what} the transformers folder: pass --out=FOLDER too")
    if cfg["check_ids"] and cfg["check_ids"] not in CHECK_SPLITS:
        raise ExportError(f"--check_ids must be one of {', '.join(CHECK_SPLITS)}, got {cfg['check_ids']!r}")
    require(*REQUIREMENTS, *(("gguf",) if cfg["gguf"] else ()))
    try:
        ckpt = ckpt_io.load_model_checkpoint(cfg["ckpt"])
    except ckpt_io.CheckpointError as e:
        raise ExportError(str(e)) from None
    tok = load_tokenizer(ckpt, cfg["ckpt"])
    hf_architecture(model_args(ckpt))  # fail before writing anything
    report = {}
    if cfg["out"]:
        t0 = time.perf_counter()
        report["arch"] = write_hf_folder(cfg["out"], ckpt, tok, cfg["dtype"])
        report["hf_seconds"] = time.perf_counter() - t0
        if cfg["verify"]:
            report["max_logit_diff"] = verify(cfg["out"], cfg["ckpt"], tok)
    if cfg["gguf"]:
        t0 = time.perf_counter()
        write_gguf(cfg["gguf"], ckpt, tok, cfg["dtype"])
        report["gguf_seconds"] = time.perf_counter() - t0
        report["gguf_bytes"] = Path(cfg["gguf"]).stat().st_size
    if cfg["check_ids"]:
        report["check_ids"] = check_ids(cfg["out"], cfg["check_ids"], tok)
    if cfg["push_to_hub"]:
        push(cfg["out"], cfg["push_to_hub"])
    return report


def main(argv=None):
    cfg = configure(DEFAULTS, argv, "export.py", __doc__)
    try:
        report = export(cfg)
    except ExportError as e:
        raise SystemExit(f"error: {e}") from None
    if cfg["out"]:
        line = f"wrote {cfg['out']} ({report['arch']}, {cfg['dtype']}) in {report['hf_seconds']:.1f}s"
        if "max_logit_diff" in report:
            line += f"; transformers loads it, max |logit diff| vs solGPT {report['max_logit_diff']:.2e}"
        print(line)
    if cfg["gguf"]:
        print(f"wrote {cfg['gguf']} ({report['gguf_bytes'] / 2**20:.1f} MiB) in {report['gguf_seconds']:.1f}s")
    if cfg["check_ids"]:
        n, same, tokens, first_bad = report["check_ids"]
        print(f"AutoTokenizer ids equal solGPT's on {same}/{n} {cfg['check_ids']} documents ({tokens:,} tokens)")
        if same != n:
            raise SystemExit(f"error: {n - same} documents tokenize differently, first {first_bad}; please report it")
    if cfg["push_to_hub"]:
        print(f"pushed {cfg['out']} to https://huggingface.co/{cfg['push_to_hub']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
