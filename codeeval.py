"""
Evaluate code generation on the NatSpec-to-body test set (data/natspec/test.json: functions of the val packages,
never trained on). For every function the model writes the body between its braces, given the file around it:

    python codeeval.py --ckpt=out-fim/model.pt                     # FIM and left-to-right, all functions
    python codeeval.py --ckpt=out-cpu/model.pt --modes=l2r --limit=100 --out=report-l2r.json

modes: fim (prefix + suffix, complete.py's fill) and l2r (the prefix only, complete.py's continue_body: the base
model's baseline). Measures, per mode:
  syntax@1   greedy body non-empty AND prefix + body + suffix parses with tree-sitter-solidity (no ERROR/MISSING)
  syntax@5   one of 5 samples at temperature 0.8 is (pass@5)
  compile@1  the greedy completed file compiles with solc-js (compiler.compile_source), imports resolved from the
             package tarballs; among functions whose original file compiles ("unavailable" without compiler/)
  exact@1    greedy body == the original (leading/trailing whitespace aside)
  edit_sim@1 1 - token-level Levenshtein distance / the longer length (tokens: words and single symbols)
Functions whose original file does not parse cleanly are left out (the grammar cannot judge them); the report says
how many. Progress goes to stderr, the report (JSON) to stdout and --out.
"""

import json
import re
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import complete  # noqa: E402
import sample  # noqa: E402
import solsyntax  # noqa: E402
from common import atomic_write  # noqa: E402
from configurator import configure  # noqa: E402

DEFAULTS = dict(
    ckpt="",
    out_dir="out",
    set="data/natspec/test.json",  # written by python data/natspec/prepare.py
    modes="fim,l2r",
    limit=0,  # evaluate the first N functions (0 = all)
    k=5,  # samples for pass@k
    temperature_k=0.8,  # their temperature (pass@1 is greedy)
    max_new_tokens=256,
    solc=True,  # compile completed files (needs the compiler/ package and Node.js); False skips it
    cache_dir="data/solidity-packages/cache/tarballs",  # package tarballs, for the imports of compiled files
    packages="data/solidity-packages/packages.json",
    seed=1337,
    device="auto",
    dtype="auto",
    token_healing=True,
    allow_empty=False,  # complete.py's: False keeps the model from ending a body before it has written text
    stop_at_block_end=True,  # complete.py's: FIM middles cut before a brace that closes the function (as l2r is)
    repetition_penalty=complete.DEFAULTS["repetition_penalty"],  # complete.py's (1.0 = off)
    out="",  # also write the JSON report here
)
MODES = ("fim", "l2r")
LEXEME = re.compile(r"\w+|[^\w\s]")


def lexemes(code):
    return LEXEME.findall(code)


def edit_distance(a, b):
    """Levenshtein distance of two sequences; one numpy row per element of a (insertions via a running minimum)."""
    vocab = {x: i for i, x in enumerate(set(a) | set(b))}
    bb = np.array([vocab[x] for x in b], dtype=np.int64)
    prev = np.arange(len(b) + 1)
    ramp = np.arange(len(b) + 1)
    for i, x in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != vocab[x]))
        prev = np.minimum.accumulate(cur - ramp) + ramp  # cur[j] = min(cur[j], cur[j-1] + 1), all j at once
    return int(prev[-1])


def edit_similarity(generated, original):
    a, b = lexemes(generated), lexemes(original)
    return 1.0 if not a and not b else 1 - edit_distance(a, b) / max(len(a), len(b))


def syntax_valid(prefix, middle, suffix):
    """The completion is non-empty (an empty body always parses) and the completed file parses cleanly."""
    return bool(middle.strip()) and solsyntax.is_valid(prefix + middle + suffix)


def exact_match(middle, original):
    return middle.strip() == original.strip()


class Compiler:
    """Compiles completed files inside an extracted copy of the package tarballs; None-results when unavailable."""

    def __init__(self, cache_dir, packages_file, enabled=True):
        self.compiler, self.reason = None, "not run (--solc=False)"
        if not enabled:
            return
        try:
            import compiler  # the project's solc-js setup, shared with the vulnerability work
        except ImportError:
            self.reason = "unavailable (no compiler/ package)"
            return
        self.compiler, self.reason = compiler, ""
        self.tmp = tempfile.TemporaryDirectory(prefix="codeeval-")
        self.modules = Path(self.tmp.name) / "node_modules"
        self._extract(Path(cache_dir), Path(packages_file))
        self.original_ok = {}

    def _extract(self, cache_dir, packages_file):
        """Every package's .sol files at node_modules/<name>/<path>; the first version listed wins a name."""
        from data import packages as npm
        seen = set()
        for pkg in npm.load_package_list(packages_file)["packages"]:
            if pkg["name"] in seen:
                continue
            seen.add(pkg["name"])
            path = cache_dir / npm.tarball_name(pkg["name"], pkg["version"])
            if not path.is_file():
                continue
            with tarfile.open(path, "r|gz") as tf:
                for m in tf:
                    rel = Path(m.name).relative_to("package") if m.name.startswith("package/") else None
                    if m.isfile() and m.name.endswith(".sol") and rel and ".." not in rel.parts:
                        dest = self.modules / pkg["name"] / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(tf.extractfile(m).read())

    def _compile(self, file_key, text):
        source, path = file_key.split("/package/", 1) if "/package/" in file_key else (file_key, "")
        name = source.rsplit("@", 1)[0]
        dest = self.modules / name / path
        original = dest.read_bytes() if dest.is_file() else None
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        try:
            return bool(self.compiler.compile_source(str(dest), base_paths=(str(self.modules / name),
                                                                             str(self.modules))).ok)
        except getattr(self.compiler, "CompilerError", ()):  # e.g. no solc-js for this pragma: no verdict possible
            return False
        finally:
            if original is None:
                dest.unlink()
            else:
                dest.write_bytes(original)

    def compiles(self, file_key, original, completed, parses=True):
        """True/False for the completed file; None where no verdict is possible (no compiler, or the original
        file itself does not compile here: then the completion cannot be judged). A completion that does not
        parse is False without running solc."""
        if self.compiler is None:
            return None
        if file_key not in self.original_ok:
            self.original_ok[file_key] = self._compile(file_key, original)
        if not self.original_ok[file_key]:
            return None
        return parses and self._compile(file_key, completed)


def load_set(path, limit):
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: {p} not found; run python data/natspec/prepare.py first")
    data = json.loads(p.read_text(encoding="utf-8"))
    items = []
    for fn in data["functions"]:
        text = data["files"][fn["file"]]
        items.append(dict(fn, prefix=text[:fn["body_start"]], body=text[fn["body_start"]:fn["body_end"]],
                          suffix=text[fn["body_end"]:]))
    return items[:limit] if limit else items


def score_function(item, greedy, samples, compiler):
    """The measures of one function's completions (greedy middle, k sampled middles)."""
    pre, suf = item["prefix"], item["suffix"]
    ok = syntax_valid(pre, greedy, suf)
    return {"syntax@1": ok, "syntax@k": any(syntax_valid(pre, m, suf) for m in samples),
            "compile@1": compiler.compiles(item["file"], pre + item["body"] + suf, pre + greedy + suf, ok),
            "exact@1": exact_match(greedy, item["body"]), "edit_sim@1": edit_similarity(greedy, item["body"])}


def summarize(scores, k, compile_reason):
    n = len(scores)
    judged = [s["compile@1"] for s in scores if s["compile@1"] is not None]
    return {"functions": n,
           "syntax@1": sum(s["syntax@1"] for s in scores) / max(n, 1),
           f"syntax@{k}": sum(s["syntax@k"] for s in scores) / max(n, 1),
           "compile@1": (sum(judged) / len(judged) if judged else compile_reason or "no original file compiles"),
           "compile_judged": len(judged),
           "exact@1": sum(s["exact@1"] for s in scores) / max(n, 1),
           "edit_sim@1": sum(s["edit_sim@1"] for s in scores) / max(n, 1)}


def generate(completer, mode, item, num_rows):
    if mode == "fim":
        return completer.fill(item["prefix"], item["suffix"], num_rows)
    return completer.continue_body(item["prefix"], num_rows)


def evaluate(completer_for, items, modes, k, compiler, progress=True):
    """{mode: summary}; completer_for(temperature) gives a complete.Completer sampling at that temperature."""
    greedy, sampler = completer_for(0.0), completer_for(None)
    report = {}
    for mode in modes:
        scores = []
        for item in tqdm(items, desc=mode, disable=not progress, file=sys.stderr):
            middle = generate(greedy, mode, item, 1)[0]
            samples = generate(sampler, mode, item, k) if k else []
            scores.append(score_function(item, middle, samples, compiler))
        report[mode] = summarize(scores, k, compiler.reason)
    return report


def main(argv=None):
    cfg = configure(DEFAULTS, argv, "codeeval.py", __doc__)
    modes = [m.strip() for m in cfg["modes"].split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise SystemExit(f"error: --modes must be a comma-separated subset of {','.join(MODES)}, got {cfg['modes']!r}")
    if cfg["k"] < 0 or cfg["limit"] < 0:
        raise SystemExit("error: --k and --limit must be >= 0")
    try:
        solsyntax.parser()
    except solsyntax.SyntaxUnavailable as e:
        raise SystemExit(f"error: {e}") from None
    every = load_set(cfg["set"], 0)
    parsed = [it for it in every if solsyntax.is_valid(it["prefix"] + it["body"] + it["suffix"])]
    items = parsed[:cfg["limit"]] if cfg["limit"] else parsed
    knobs = dict(complete.DEFAULTS, ckpt=cfg["ckpt"], out_dir=cfg["out_dir"], seed=cfg["seed"], device=cfg["device"],
                 dtype=cfg["dtype"], max_new_tokens=cfg["max_new_tokens"], token_healing=cfg["token_healing"],
                 allow_empty=cfg["allow_empty"], stop_at_block_end=cfg["stop_at_block_end"],
                 repetition_penalty=cfg["repetition_penalty"])
    model, tok, device = sample.load_for_sampling(knobs)

    def completer_for(temperature):
        t = cfg["temperature_k"] if temperature is None else temperature
        return complete.Completer(model, tok, device, dict(knobs, temperature=t))

    compiler = Compiler(cfg["cache_dir"], cfg["packages"], enabled=cfg["solc"])
    report = {"ckpt": cfg["ckpt"] or str(Path(cfg["out_dir"]) / "model.pt"), "set": cfg["set"],
              "functions_in_set": len(every), "left_out_unparsable_originals": len(every) - len(parsed),
              "k": cfg["k"], "temperature_k": cfg["temperature_k"], "max_new_tokens": cfg["max_new_tokens"],
              "allow_empty": cfg["allow_empty"], "stop_at_block_end": cfg["stop_at_block_end"],
              "repetition_penalty": cfg["repetition_penalty"],
              "token_healing": cfg["token_healing"],
              **evaluate(completer_for, items, modes, cfg["k"], compiler)}
    text = json.dumps(report, indent=2)
    print(text)
    if cfg["out"]:
        atomic_write(cfg["out"], lambda f: f.write(text.encode("utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
