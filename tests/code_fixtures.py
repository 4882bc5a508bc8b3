"""Shared by test_complete.py and test_codeeval.py: a Solidity fixture and a tiny GPT that has memorized token
sequences, so what a completion should return is known exactly."""

import torch

import checkpoint as ckpt_io
from model import GPT, GPTConfig

CONTRACT = """pragma solidity ^0.8.20;

contract A {
    /// @notice adds two numbers
    function add(uint a, uint b) public pure returns (uint) {
        uint c = a + b;
        return c;
    }
}
"""
BODY = "\n        uint c = a + b;\n        return c;\n    "
PREFIX, SUFFIX = CONTRACT.split(BODY)
# token healing: as in the real corpus, a lone "\n" ends a file far less often than "\n<word>" goes on
HEAL_PROMPT = "pragma solidity ^0.8.19;\n"
HEAL_DOCS = ["pragma solidity ^0.8.19;\ncontract B {}"] * 3 + [HEAL_PROMPT]


def training_sequences(tok):
    """What the fixture model memorizes: CONTRACT's add() body as FIM (PSM, and with the prefix's last token moved
    to the middle, as a character split point there would give), CONTRACT left to right, and HEAL_DOCS."""
    import fim
    eot, sentinels = tok.eot_token, fim.sentinels(tok)
    pre, mid, suf = tok.encode(PREFIX), tok.encode(BODY), tok.encode(SUFFIX)
    return [[eot, *fim.fim_ids(pre, mid, suf, sentinels), eot],
            [eot, *fim.fim_ids(pre[:-1], pre[-1:] + mid, suf, sentinels), eot],
            [eot, *tok.encode(CONTRACT), eot]] + [[eot, *tok.encode(doc), eot] for doc in HEAL_DOCS]


def fixture_checkpoint(path):
    from tokenizer import get_tokenizer
    model, args, _ = memorizer(training_sequences(get_tokenizer()))
    return save(model, args, path)


def memorizer(sequences, steps=150, seed=0, block_size=128):
    """A 1-layer GPT trained until it reproduces the given token sequences greedily (full batch, AdamW)."""
    from tokenizer import get_tokenizer
    vocab = get_tokenizer().n_vocab
    torch.manual_seed(seed)
    args = dict(block_size=block_size, vocab_size=(vocab + 63) // 64 * 64, n_layer=1, n_head=2, n_embd=64,
                dropout=0.0, bias=False)
    model = GPT(GPTConfig(**args))
    T = max(len(s) for s in sequences)
    x = torch.tensor([s + [0] * (T - len(s)) for s in sequences])
    y = torch.tensor([s[1:] + [-1] * (T - len(s) + 1) for s in sequences])  # -1: padding, not learned
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        _, loss = model(x[:, :-1], targets=y[:, :-1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), args, loss.item()


def save(model, args, path):
    from tokenizer import get_tokenizer
    tok = get_tokenizer()
    ckpt_io.atomic_torch_save(ckpt_io.model_checkpoint(model, args, tok.name, tok.hash, 1, 0.0), path)
    return path
