"""
Code completion with a solGPT model: fill in the middle of a file, or write a function's body left to right.

    python complete.py --ckpt=out-fim/model.pt --prefix=FILE:before.sol --suffix=FILE:after.sol
    python complete.py --ckpt=out-fim/model.pt --prefix=FILE:before.sol --suffix=FILE:after.sol --out=Token.sol
    python complete.py --ckpt=out-cpu/model.pt --start=FILE:signature.sol      # NatSpec + signature -> the body

Prints only the middle on stdout (messages go to stderr), so an editor can insert it at the cursor; --out writes the
completed file (prefix + middle + suffix) atomically instead. FIM (--prefix/--suffix) needs a model trained with
fim_rate > 0 (fim.py); it writes until the model ends the middle with <|endoftext|>, or until the middle would close
a block that the suffix closes (a body written, closed, and the next function begun; --stop_at_block_end=False waits
for the end token alone). Left to right (--start) ends where the function the prompt opens is closed (its closing
brace is not part of the middle when the prompt ends at "{", and is when the prompt ends at the signature). Text before and after the cursor longer than the context window
is cut to the part nearest the cursor. The middle is never empty or blank: the model may not end it before it has
written some text (--allow_empty=True lifts that), since a small model's likeliest answer is often "nothing".
The prefix's last token is healed (healing.py); the suffix needs no healing:
in training it is encoded on its own from a character split point, exactly as here. Sampling knobs are sample.py's.
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fim  # noqa: E402
import healing  # noqa: E402
import sample  # noqa: E402
from common import atomic_write, run_main  # noqa: E402
from configurator import configure  # noqa: E402

SAMPLING_KNOBS = ("out_dir", "ckpt", "temperature", "top_k", "top_p", "seed", "device", "dtype",
                  "compile", "use_kv_cache", "token_healing", "threads")
DEFAULTS = dict(
    prefix="",  # text before the cursor, or FILE:path
    suffix="",  # text after the cursor, or FILE:path
    start="",  # instead of prefix/suffix: NatSpec + signature (FILE:path) to continue left to right
    fim_order="psm",  # 'psm' or 'spm': the order of the prompt (fim.py; training uses both)
    max_new_tokens=256,
    num_samples=1,  # > 1: that many middles on stdout, separated as sample.py separates samples
    out="",  # write the completed file here (atomically) instead of printing the middle
    allow_empty=False,  # True: the model may end the middle at once; default: it writes some text first (see below)
    stop_at_block_end=True,  # FIM: cut the middle before it closes a block the suffix closes (False: only at the end token)
    repetition_penalty=1.3,  # > 1 discourages repeating the completion's own tokens (1.0 = off; see penalize_repeats)
    **{key: sample.DEFAULTS[key] for key in SAMPLING_KNOBS},
)
FIM_SENTINELS_IN_PROMPT = 4  # <|endoftext|> <|fim_prefix|> <|fim_suffix|> <|fim_middle|>
CHUNK = 32  # new tokens between two checks for the end of the function (or of the middle's block)


def code_braces(text):
    """(index, +1 or -1) of every { and } outside comments and string literals."""
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                return
        elif text.startswith("/*", i):
            i = text.find("*/", i + 2)
            if i < 0:
                return
            i += 2
        elif text[i] in "\"'":
            quote, i = text[i], i + 1
            while i < n and text[i] != quote:
                i += 2 if text[i] == "\\" else 1
            i += 1
        else:
            if text[i] in "{}":
                yield i, 1 if text[i] == "{" else -1
            i += 1


def body_end(prompt, generated):
    """Length of the part of `generated` that completes the function the prompt is in, or None while it is open.
    A prompt ending at "{" is inside the body: the middle stops before the brace that closes it. A prompt ending at
    the signature: the middle includes the body's braces."""
    inside = prompt.rstrip().endswith("{")
    depth, target = 0, None
    for i, delta in code_braces(prompt + generated):
        if i >= len(prompt) and target is None:
            target = depth - 1 if inside else depth
        depth += delta
        if i >= len(prompt) and delta < 0 and depth == target:
            return i - len(prompt) + (0 if inside else 1)
    return None


def brace_depth(text):
    return sum(delta for _, delta in code_braces(text))


def middle_end(prefix, suffix, generated):
    """Length of the part of a FIM middle that fits between prefix and suffix, or None while it may go on: the middle
    is cut before a closing brace that would close a block the suffix itself closes. The suffix's own braces say how
    deep the code must be where it starts (a file's braces balance), so a model that writes a body, closes it and
    goes on with the next function ("return x;\n    }\n\n    function ...") gets its body back."""
    need = max(0, -brace_depth(suffix))  # the depth the suffix starts at
    depth = brace_depth(prefix)
    for i, delta in code_braces(prefix + generated):
        if i < len(prefix):
            continue
        depth += delta
        if depth < need:
            return i - len(prefix)
    return None


def penalize_repeats(prompt_len, penalty):
    """A logits hook: every token a row has already written (after the prompt; the prompt's names are there to be
    reused) gets its logit divided by penalty where positive, multiplied where negative (CTRL's repetition penalty,
    as transformers' repetition_penalty), so a greedy small model leaves its loops ("account, account, ...")."""
    def hook(logits, idx):
        new = idx[:, prompt_len:]
        if new.size(1) == 0:
            return logits
        seen = torch.gather(logits, 1, new)
        return logits.scatter(1, new, torch.where(seen > 0, seen / penalty, seen * penalty))
    return hook


class Completer:
    """A loaded model and tokenizer with the two ways to complete code; codeeval.py uses it too."""

    def __init__(self, model, tok, device, cfg):
        self.model, self.tok, self.device, self.cfg = model, tok, torch.device(device), cfg
        self.block_size = model.config.block_size
        self.specials = set(tok.special_tokens.values()) if hasattr(tok, "special_tokens") else {tok.eot_token}

    def encode(self, text):
        return sample.encode_prompt(text, self.tok, self.model.config.vocab_size)[1:]

    def heal(self, ids):
        if self.cfg["token_healing"] and self.cfg["max_new_tokens"] > 0:
            return healing.heal(ids, self.tok)
        return list(ids), b""

    def fim_prompt(self, prefix, suffix):
        """(prompt ids, healed tail, new-token budget): prefix and suffix cut to the window nearest the cursor."""
        sentinels = fim.sentinels(self.tok, self.model.config.vocab_size)
        pre, suf = self.encode(prefix), self.encode(suffix)
        budget = min(self.cfg["max_new_tokens"], self.block_size // 2)
        room = max(0, self.block_size - budget - FIM_SENTINELS_IN_PROMPT)
        n_suf = min(len(suf), max(room // 4, room - len(pre)))  # the prefix usually says more: it gets 3/4
        pre, suf = pre[len(pre) - min(len(pre), room - n_suf):], suf[:n_suf]
        pre, tail = self.heal(pre)
        prompt = [self.tok.eot_token] + fim.fim_ids(pre, [], suf, sentinels, spm=self.cfg["fim_order"] == "spm")
        return prompt, tail, min(self.cfg["max_new_tokens"], self.block_size - len(prompt))

    def _sampling(self, generator):
        return dict(temperature=self.cfg["temperature"], top_k=self.cfg["top_k"] or None, top_p=self.cfg["top_p"],
                    eot_token=self.tok.eot_token, generator=generator, use_cache=self.cfg["use_kv_cache"],
                    vocab_limit=self.tok.n_vocab)

    def _autocast(self):
        return sample.autocast(self.device, sample.resolve_dtype(self.cfg["dtype"], self.device))

    def _hook(self, prompt_len, tail):
        """The logits hook of a completion: no end before text (healing.require_text, unless allow_empty), and the
        repetition penalty on the tokens it has written; None when neither applies."""
        hooks = []
        if not self.cfg["allow_empty"]:
            hooks.append(healing.require_text(healing.token_table(self.tok), prompt_len, tail, self.specials))
        if self.cfg["repetition_penalty"] != 1.0:
            hooks.append(penalize_repeats(prompt_len, self.cfg["repetition_penalty"]))
        if not hooks:
            return None

        def hook(logits, idx):
            for h in hooks:
                logits = h(logits, idx)
            return logits
        return hook

    def _generate(self, prompt, tail, max_new, num_rows, generator, hook=None):
        with self._autocast():
            return healing.generate(self.model, prompt, tail, healing.token_table(self.tok), max_new, num_rows,
                                    logits_hook=hook, **self._sampling(generator))

    def _text(self, ids, tail):
        """The new text after the healed tail, ended at the first special token (end of the middle)."""
        end = next((k for k, i in enumerate(ids) if i in self.specials), len(ids))
        return healing.decode_new(self.tok, ids[:end], tail)

    def fill(self, prefix, suffix, num_rows=1):
        """num_rows middles between prefix and suffix (FIM), each ended by <|endoftext|> or, with
        stop_at_block_end, cut where it would close a block the suffix closes (middle_end)."""
        prompt, tail, max_new = self.fim_prompt(prefix, suffix)
        if not self.cfg["stop_at_block_end"]:
            rows = self._generate(prompt, tail, max_new, num_rows, self._generator(), self._hook(len(prompt), tail))
            return [self._text(ids, tail) for ids in rows]
        return self._generate_cut(prompt, tail, max_new, num_rows, lambda text: middle_end(prefix, suffix, text))

    def continue_body(self, prompt_text, num_rows=1):
        """num_rows left-to-right continuations of prompt_text, each cut where its function ends (body_end)."""
        prompt, tail = self.heal([self.tok.eot_token] + self.encode(prompt_text))
        return self._generate_cut(prompt, tail, self.cfg["max_new_tokens"], num_rows,
                                  lambda text: body_end(prompt_text, text))

    def _cut(self, ids, tail, end_of):
        """(text of a row up to end_of(text), whether the row is finished: cut there, or ended by a special token)."""
        text = self._text(ids, tail)
        end = end_of(text)
        return (text if end is None else text[:end]), end is not None or any(i in self.specials for i in ids)

    def _generate_cut(self, prompt, tail, limit, num_rows, end_of):
        """Generate in chunks of CHUNK tokens until every row is finished (self._cut) or limit tokens are made, so
        generation stops soon after the last row has reached its end."""
        generator = self._generator()
        hook = self._hook(len(prompt), tail)  # one for every chunk: it reads the rows' tokens, so it holds no state
        rows = self._generate(prompt, tail, min(CHUNK, limit), num_rows, generator, hook)
        while True:
            cut = [self._cut(ids, tail, end_of) for ids in rows]
            if all(done for _, done in cut) or len(rows[0]) >= limit:
                return [text for text, _ in cut]
            # rows stay equally long (model.generate pads a stopped row with eot), so they continue as one batch
            idx = torch.tensor([prompt + ids for ids in rows], dtype=torch.long, device=self.device)
            with self._autocast():
                y = self.model.generate(idx, min(CHUNK, limit - len(rows[0])), logits_hook=hook,
                                        **self._sampling(generator))
            rows = y[:, len(prompt):].tolist()

    def _generator(self):
        return torch.Generator(device=self.device).manual_seed(self.cfg["seed"])


def read_text(value, key):
    """--key=text or --key=FILE:path (sample.py's reader, with this option's name in its messages)."""
    try:
        return sample.read_prompt(value)
    except SystemExit as e:
        raise SystemExit(str(e).replace("--start=FILE:path", f"--{key}=FILE:path")) from None


def check(cfg):
    sample.check_knobs(dict(cfg, max_new_tokens=cfg["max_new_tokens"]))
    if not cfg["repetition_penalty"] > 0:
        raise SystemExit(f"error: --repetition_penalty must be > 0 (1.0 = off), got {cfg['repetition_penalty']!r}")
    if cfg["fim_order"] not in ("psm", "spm"):
        raise SystemExit(f"error: --fim_order must be psm or spm, got {cfg['fim_order']!r}")
    if cfg["start"] and (cfg["prefix"] or cfg["suffix"]):
        raise SystemExit("error: --start (left to right) and --prefix/--suffix (fill in the middle) exclude each "
                         "other; give one of them")
    if not (cfg["start"] or cfg["prefix"] or cfg["suffix"]):
        raise SystemExit("error: nothing to complete; give --prefix=FILE:before.sol --suffix=FILE:after.sol, "
                         "or --start=FILE:signature.sol")
    if cfg["out"] and cfg["num_samples"] != 1:
        raise SystemExit("error: --out writes one completed file; use --num_samples=1 with it")


def main(argv=None, tokenizer=None):
    cfg = configure(DEFAULTS, argv, "complete.py", __doc__)
    check(cfg)
    model, tok, device = sample.load_for_sampling(cfg, tokenizer)
    completer = Completer(model, tok, device, cfg)
    t0 = time.perf_counter()
    if cfg["start"]:
        prefix, suffix = read_text(cfg["start"], "start"), ""
        middles = completer.continue_body(prefix, cfg["num_samples"])
    else:
        prefix, suffix = read_text(cfg["prefix"], "prefix"), read_text(cfg["suffix"], "suffix")
        try:
            middles = completer.fill(prefix, suffix, cfg["num_samples"])
        except fim.FimError as e:
            raise SystemExit(f"error: {e}") from None
    print(f"{len(middles)} completion(s), {sum(map(len, middles))} characters in {time.perf_counter() - t0:.2f}s "
          f"({device})", file=sys.stderr)
    if cfg["out"]:
        try:
            atomic_write(cfg["out"], lambda f: f.write((prefix + middles[0] + suffix).encode("utf-8")))
        except OSError as e:
            raise SystemExit(f"error: cannot write {cfg['out']}: {e.strerror or e}") from None
        print(f"wrote {cfg['out']}", file=sys.stderr)
    else:
        sys.stdout.write(sample.SEPARATOR.join(middles))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    run_main(main)
