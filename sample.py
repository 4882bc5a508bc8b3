"""
Sample from a trained solGPT:

    python sample.py --out_dir=out-cpu --start="pragma solidity ^0.8.20;" --num_samples=3
    python sample.py --ckpt=out-cpu/best_model.pt --start=FILE:prompt.sol --out=samples.txt

Reads only the weights file (model.pt, or best_model.pt with --ckpt). Every prompt is preceded by the end-of-text
token, i.e. it starts a new file, as documents did in training; its last token is healed (healing.py: the model
re-spells it, so a prompt ending in a newline is not read as the end of a file). Generation uses the KV cache
(--use_kv_cache=False recomputes the whole window for every token: same tokens, slower; for comparison). Tokens/s goes to stderr.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoint as ckpt_io  # noqa: E402
import healing  # noqa: E402
from common import run_main  # noqa: E402
from configurator import configure  # noqa: E402
from runtime import DTYPES, Dist, autocast, compile_unavailable, resolve_device, resolve_dtype  # noqa: E402  (same rules as train.py)

DEFAULTS = dict(
    out_dir="out",  # reads out_dir/model.pt ...
    ckpt="",  # ... unless a weights file is named here
    start="",  # prompt text, or FILE:path to read it from a file; "" = start a new file from scratch
    num_samples=3,
    max_new_tokens=500,
    temperature=0.8,  # 0 = greedy; < 1 less random, > 1 more
    top_k=200,  # sample only among the k most likely tokens; 0 = off
    top_p=0.95,  # nucleus: the smallest set of tokens with this much probability; 1.0 = off
    stop_at_eot=True,  # end a sample at the end-of-text token (the end of the generated file)
    seed=1337,
    device="auto",
    dtype="auto",
    compile=False,
    use_kv_cache=True,
    threads=0,  # CPU threads; 0 = PyTorch's default (one per core), fastest on an idle CPU (README); on a CPU busy
    # with other work, --threads=1 avoids the threads fighting over the cores
    allow_special=False,  # let a sample write <|fim_*|>, <|pad|> or <|cls|>: left to right it never wants them (a
    # FIM-trained model can write <|fim_middle|> and go on in FIM order); <|endoftext|> is stop_at_eot's
    token_healing=True,  # re-spell the prompt's last token freely (healing.py): a prompt ending in "\n" can go on
    out="",  # also write the samples to this file (atomically)
)
SEPARATOR = "\n---------------\n"


def read_prompt(start):
    if not start.startswith("FILE:"):
        return start
    path = Path(start[len("FILE:"):])
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SystemExit(f"error: prompt file {path} not found (--start=FILE:path)") from None
    except UnicodeDecodeError:
        raise SystemExit(f"error: prompt file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:  # a directory, no permission, ...
        raise SystemExit(f"error: cannot read prompt file {path}: {e.strerror or e}") from None


def encode_prompt(text, tok, vocab_size):
    """[eot] + tokens of text, checked to fit the model's vocabulary."""
    try:
        ids = tok.encode(text)
    except Exception as e:  # a tokenizer refusing input is the user's prompt, not a bug to trace
        raise SystemExit(f"error: the prompt cannot be encoded by tokenizer {tok.name}: {e}") from None
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise SystemExit(f"error: the prompt encodes to token id {bad[0]}, outside the model's vocabulary "
                         f"({vocab_size}); the checkpoint and tokenizer do not match")
    return [tok.eot_token] + ids


def load_tokenizer(ckpt, path):
    from tokenizer import get_tokenizer, TokenizerError

    name = ckpt.get("tokenizer") or None
    try:
        tok = get_tokenizer(name)
    except TokenizerError as e:
        raise SystemExit(f"error: {e}") from None
    want = ckpt.get("tokenizer_hash")
    if want and getattr(tok, "hash", want) != want:
        raise SystemExit(f"error: {path} was trained with a different {tok.name} tokenizer (hash {want[:12]}, "
                         f"installed {tok.hash[:12]}); use the tokenizer files it was trained with")
    return tok


def banned_specials(tok, cfg):
    """The special tokens a left-to-right sample may not write (all but <|endoftext|>, unless allow_special)."""
    if cfg["allow_special"]:
        return []
    return sorted(i for i in getattr(tok, "special_tokens", {}).values() if i != tok.eot_token)


def ban(token_ids):
    """A logits hook that gives token_ids no probability."""
    def hook(logits, idx):
        logits = logits.clone()
        logits[:, token_ids] = float("-inf")
        return logits
    return hook


def generate_samples(model, prompt_ids, cfg, eot_token, vocab_limit, device, tail=b"", table=None, banned=()):
    """Yield (new token ids, seconds) per sample; one torch.Generator seeded once makes the whole run reproducible.
    tail: bytes healed off the prompt (healing.heal), which the first new tokens spell again (and which no special
    token spells, so the ban holds for the first token too). banned: token ids never written (banned_specials)."""
    device = torch.device(device)
    hook = ban(list(banned)) if banned else None
    generator = torch.Generator(device=device).manual_seed(cfg["seed"])
    ctx = autocast(device, resolve_dtype(cfg["dtype"], device))
    for _ in range(cfg["num_samples"]):
        t0 = time.perf_counter()
        with ctx:
            ids, = healing.generate(model, prompt_ids, tail, table, cfg["max_new_tokens"],
                                    temperature=cfg["temperature"], top_k=cfg["top_k"] or None, top_p=cfg["top_p"],
                                    eot_token=eot_token if cfg["stop_at_eot"] else None, generator=generator,
                                    use_cache=cfg["use_kv_cache"], vocab_limit=vocab_limit, logits_hook=hook)
        if device.type == "cuda":
            torch.cuda.synchronize()
        yield ids, time.perf_counter() - t0


def decode_sample(tok, prompt_text, new_ids, tail=b""):
    return prompt_text + healing.decode_new(tok, new_ids, tail, tok.eot_token)


def check_knobs(cfg):
    """The sampling knobs (shared with complete.py), each checked with a one-line error."""
    for key, ok, rule in (("num_samples", cfg["num_samples"] >= 1, ">= 1"),
                          ("max_new_tokens", cfg["max_new_tokens"] >= 0, ">= 0"),
                          ("temperature", cfg["temperature"] >= 0, ">= 0 (0 is greedy)"),
                          ("top_p", 0 < cfg["top_p"] <= 1, "in (0, 1]"), ("top_k", cfg["top_k"] >= 0, ">= 0 (0 is off)")):
        if not ok:
            raise SystemExit(f"error: --{key} must be {rule}, got {cfg[key]!r}")
    if cfg["dtype"] not in ("auto", *DTYPES):
        raise SystemExit(f"error: --dtype must be one of auto, {', '.join(DTYPES)}, got {cfg['dtype']!r}")
    if cfg["threads"] < 0:
        raise SystemExit(f"error: --threads must be >= 0 (0 = one per core), got {cfg['threads']}")


def load_for_sampling(cfg, tokenizer=None):
    """(model, tokenizer, device) from --ckpt or --out_dir/model.pt (shared with complete.py)."""
    device = resolve_device(cfg["device"], Dist())
    if device.type == "cpu" and cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    path = Path(cfg["ckpt"]) if cfg["ckpt"] else Path(cfg["out_dir"]) / ckpt_io.MODEL_FILE
    try:
        model, ckpt = ckpt_io.load_model(path, device)
    except ckpt_io.CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    tok = tokenizer or load_tokenizer(ckpt, path)
    no_compile = cfg["compile"] and compile_unavailable(device)
    if no_compile:
        print(f"{no_compile}: running without it", file=sys.stderr)
    elif cfg["compile"]:
        # compile forward itself: generate() calls self(...), which a torch.compile wrapper module would bypass;
        # dynamic shapes because every step's sequence and cache lengths differ
        model.forward = torch.compile(model.forward, dynamic=True)
    return model, tok, device


def main(argv=None, tokenizer=None):
    """tokenizer: inject one (tests); by default the one named in the checkpoint, via tokenizer.get_tokenizer."""
    cfg = configure(DEFAULTS, argv, "sample.py", __doc__)
    check_knobs(cfg)
    model, tok, device = load_for_sampling(cfg, tokenizer)
    prompt_text = read_prompt(cfg["start"])
    prompt_ids = encode_prompt(prompt_text, tok, model.config.vocab_size)
    tail, table = b"", None
    if cfg["token_healing"] and cfg["max_new_tokens"] > 0:
        prompt_ids, tail = healing.heal(prompt_ids, tok)
        table = healing.token_table(tok)
    texts, n_tokens, seconds = [], 0, 0.0
    samples = generate_samples(model, prompt_ids, cfg, tok.eot_token, tok.n_vocab, device, tail, table,
                               banned_specials(tok, cfg))
    for i, (ids, dt) in enumerate(samples):
        text = decode_sample(tok, prompt_text, ids, tail)
        texts.append(text)
        n_tokens, seconds = n_tokens + len(ids), seconds + dt
        print(text + SEPARATOR, flush=True)
        if cfg["stop_at_eot"] and tok.eot_token in ids:  # say why a sample is short; it is the model's choice
            print(f"sample {i + 1} ended at <|endoftext|> after {ids.index(tok.eot_token)} new tokens "
                  f"(--stop_at_eot=False continues past it)", file=sys.stderr)
    print(f"{n_tokens} tokens in {seconds:.2f}s: {n_tokens / max(seconds, 1e-9):.1f} tokens/s "
          f"({'KV cache' if cfg['use_kv_cache'] else 'no cache'}, {device})", file=sys.stderr)
    if cfg["out"]:
        try:
            ckpt_io.atomic_write(cfg["out"], lambda f: f.write(SEPARATOR.join(texts).encode("utf-8")))
        except OSError as e:
            raise SystemExit(f"error: cannot write {cfg['out']}: {e.strerror or e}") from None
    return 0


if __name__ == "__main__":
    run_main(main)
