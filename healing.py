"""
Token healing at the prompt boundary, shared by sample.py and complete.py.

Our BPE glues a newline and its indentation to the next word ("\\n    function" is one token), so a prompt that ends in
a newline ends in a lone "\\n" token, which in training is almost only the last token of a file: the model then
ends the file at once. Healing drops the prompt's last token and makes the first generated token(s) spell its text
again, letting the model pick the token the text would really have been encoded with ("\\n    function", "\\n\\n",
...). The same holds at any cursor that splits a word, and at the end of a FIM prefix.

    kept, tail = heal(prompt_ids, tok)          # tail: the bytes of the dropped token
    ids = generate(model, kept, tail, table, max_new_tokens, ...)   # ids spell tail + continuation
"""

import functools

import torch

from model import sample_next


def token_table(tok):
    """bytes of every regular token id; special tokens map to None (never allowed while healing)."""
    return _token_table(tok)


@functools.lru_cache(maxsize=8)
def _token_table(tok):
    specials = set(getattr(tok, "special_tokens", {}).values()) | {tok.eot_token}
    as_bytes = getattr(tok, "decode_bytes", None) or (lambda ids: tok.decode(ids).encode("utf-8"))
    return tuple(None if i in specials else as_bytes([i]) for i in range(tok.n_vocab))


def heal(prompt_ids, tok, n_drop=1):
    """(prompt_ids without its last n_drop regular tokens, their bytes). Special tokens (the leading end-of-text,
    FIM sentinels) are never dropped: they are not text the model could spell differently."""
    table = token_table(tok)
    kept = list(prompt_ids)
    tail = b""
    for _ in range(n_drop):
        if not kept or kept[-1] >= len(table) or table[kept[-1]] is None:
            break
        tail = table[kept.pop()] + tail
    return kept, tail


def allowed_tokens(tail, table, size):
    """Bool mask (size,) of the tokens that fit the text still to spell: a token that starts with all of it
    (it completes the tail and goes on) or one that is a non-empty start of it (more constrained tokens follow)."""
    mask = torch.zeros(size, dtype=torch.bool)
    for i, b in enumerate(table[:size]):
        if b and (b.startswith(tail) or tail.startswith(b)):
            mask[i] = True
    return mask


def constrained_step(model, idx, tail, table, temperature, top_k, top_p, generator, vocab_limit):
    """One token for the single-row idx among those allowed by tail; returns (token id, tail left to spell)."""
    with torch.no_grad():
        logits, _ = model(idx[:, -model.config.block_size:])
    logits = logits[:, -1, :].float()
    mask = allowed_tokens(tail, table, logits.size(-1)).to(logits.device)
    logits = logits.masked_fill(~mask, float("-inf"))
    nxt = int(sample_next(logits, temperature, top_k, top_p, generator, vocab_limit)[0, 0])
    b = table[nxt]
    return nxt, (tail[len(b):] if tail.startswith(b) else b"")


def generate(model, prompt_ids, tail, table, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             eot_token=None, generator=None, use_cache=True, vocab_limit=None):
    """model.generate for one prompt whose first new tokens must spell `tail`; returns the new token ids."""
    device = next(model.parameters()).device
    idx = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    new = []
    while tail and len(new) < max_new_tokens:
        nxt, tail = constrained_step(model, idx, tail, table, temperature, top_k, top_p, generator, vocab_limit)
        new.append(nxt)
        idx = torch.cat((idx, torch.tensor([[nxt]], device=device)), dim=1)
    if len(new) < max_new_tokens:
        y = model.generate(idx, max_new_tokens - len(new), temperature=temperature, top_k=top_k, top_p=top_p,
                           eot_token=eot_token, generator=generator, use_cache=use_cache, vocab_limit=vocab_limit)
        new += y[0, idx.size(1):].tolist()
    return new


def decode_new(tok, new_ids, tail, eot_token=None):
    """Text of the new tokens after the healed tail (which belongs to the prompt), cut at end-of-text."""
    if eot_token is not None and eot_token in new_ids:
        new_ids = new_ids[:new_ids.index(eot_token)]
    as_bytes = getattr(tok, "decode_bytes", None)
    if as_bytes is None:
        return tok.decode(new_ids)[len(tail.decode("utf-8", errors="replace")):]
    return as_bytes(new_ids)[len(tail):].decode("utf-8", errors="replace")
