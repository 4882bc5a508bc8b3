"""
Measure what solGPT exists for, on the machine that runs it: training speed, generation speed with and without the
KV cache, data preparation throughput, tokenizer compression, and model quality at a fixed training budget.

    python bench.py                       # full report (~20 minutes on a 2-core CPU)
    python bench.py --quick               # under 5 minutes on 2 cores
    python bench.py --device=cuda         # GPU: train benchmark on config/train_gpt2_124m.py, bf16 + torch.compile
    python bench.py --only=sample,tokenizer --out=report.json
    python bench.py --only=vuln --ckpt=out-vuln-cpu/model.pt   # classifier F1 on held-out files vs two baselines

Each speed figure is the median over repeats (warm-up excluded) with min and max beside it in `stats`. Writes a JSON
report (--out, default bench_report.json) and prints a table. Speed is measured here, never asserted by a test.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from common import ArgumentParser, atomic_write  # noqa: E402
from schedule import iters_for_budget  # noqa: E402  (also ablate.py's)
from plot import read_metrics  # noqa: E402  (the one reader of metrics.jsonl)

SECTIONS = ("train", "sample", "data", "tokenizer", "quality", "vuln")
DEFAULT_SECTIONS = SECTIONS[:5]  # vuln needs a fine-tuned classifier (--ckpt): asked for by name
PROMPT = "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\n\ncontract Vault {\n"


# ----------------------------------------------------------------------------------------------------------------
# helpers


def stats(values):
    """Median, min and max of repeated measurements."""
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def peak_rss_kb(pid):
    """The process's peak RSS so far (Linux VmHWM, in KiB), or None where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None


def run_child(cmd, env=None):
    """Run a command to completion; return (exit code, wall seconds, peak RSS of that process in MB, output).

    Peak memory is read from /proc while the child runs: its rusage ru_maxrss would also count the pages of this
    (large, torch-importing) process that the child shared between fork and exec."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak_kb = None
        while proc.poll() is None:
            peak_kb = max(filter(None, (peak_kb, peak_rss_kb(proc.pid))), default=None)
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        log.seek(0)
        output = log.read()
    if peak_kb is None:  # no /proc (macOS): the child's own maximum, which may include the fork's shared pages
        import resource
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return proc.returncode, wall, peak_kb / 1024, output


def fail(what, output):
    tail = "\n".join(output.strip().splitlines()[-15:])
    raise SystemExit(f"error: {what} failed; its last output:\n{tail}")


def machine_info(device):
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "device": device, "gpu": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def load_config(path, overrides=()):
    import train
    from configurator import configure
    return configure(dict(train.DEFAULTS), [str(path), *overrides])


def shown(path):
    """A path as the report shows it: relative to the repo when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def train_cmd(config, overrides):
    return [sys.executable, str(ROOT / "train.py"), str(config), *overrides]


# ----------------------------------------------------------------------------------------------------------------
# sections


def bench_train(config, device, iters, warmup, extra):
    """Steady-state training speed from a short run's metrics.jsonl."""
    with tempfile.TemporaryDirectory() as out_dir:
        overrides = [f"--out_dir={out_dir}", f"--max_iters={warmup + iters}", "--log_interval=1",
                     f"--eval_interval={10 ** 9}", "--eval_iters=1", f"--device={device}", *extra]
        # an empty compile cache, as on a user's first run: torch.compile's start-up is then measured in full
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(out_dir) / "inductor-cache")}
        code, wall, peak_rss_mb, output = run_child(train_cmd(config, overrides), env=env)
        if code != 0:
            fail(f"train benchmark ({config})", output)
        records, _ = read_metrics(Path(out_dir) / "metrics.jsonl")
        records = [r for r in records if "dt_ms" in r]
        steps = [r for r in records if r["iter"] >= warmup]
        peak_gpu = [r["peak_mem_mb"] for r in steps if r.get("peak_mem_mb")]
    ms, tps, mfu = (stats([r[k] for r in steps]) for k in ("dt_ms", "tok_per_s", "mfu"))
    # what the warm-up iterations took beyond steady state: torch.compile's compilation, mostly
    startup_s = max(0.0, sum(r["dt_ms"] for r in records if r["iter"] < warmup) / 1000 - warmup * ms["median"] / 1000)
    return {"config": shown(config), "device": device, "iters_measured": len(steps), "warmup_iters": warmup,
            "startup_s": startup_s,
            "tokens_per_s": tps["median"], "ms_per_iter": ms["median"], "mfu": mfu["median"],
            "peak_memory_mb": max(peak_gpu) if peak_gpu else peak_rss_mb,
            "peak_memory_kind": "GPU allocated" if peak_gpu else "process RSS",
            "stats": {"tokens_per_s": tps, "ms_per_iter": ms, "mfu": mfu}}


def bench_sample(config, device, new_tokens, repeats, ckpt=None):
    """KV-cache generation against full recomputation: same model, prompt and greedy tokens, batch 1."""
    import torch
    from model import GPT, GPTConfig
    from tokenizer import get_tokenizer

    if ckpt:
        import checkpoint
        model, saved = checkpoint.load_model(ckpt, device)
        tok = get_tokenizer(saved["tokenizer"])
        source = str(ckpt)
    else:
        cfg = load_config(config)
        tok = get_tokenizer()
        import train
        model = GPT(GPTConfig(**train.model_args_from(cfg, tok.n_vocab)))
        source = f"{config} shape, random weights (speed does not depend on the weights)"
    model.to(device).eval()
    prompt = torch.tensor([tok.encode(PROMPT)], dtype=torch.long, device=device)

    def timed(use_cache, m=model):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = m.generate(prompt, new_tokens, temperature=0.0, use_cache=use_cache)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, new_tokens / (time.perf_counter() - t0)

    model.generate(prompt, 8, temperature=0.0, use_cache=True)  # warm-up: allocator, kernels
    model.generate(prompt, 8, temperature=0.0, use_cache=False)
    kv, full, same, distinct = [], [], True, 0
    for _ in range(repeats):
        out_kv, speed_kv = timed(True)
        out_full, speed_full = timed(False)
        kv.append(speed_kv)
        full.append(speed_full)
        same &= torch.equal(out_kv, out_full)
        distinct = len(set(out_kv[0, prompt.size(1):].tolist()))  # how much the equality check says
    if not same:
        raise SystemExit("error: KV-cache and full-recomputation greedy tokens differ: the cache is wrong")
    kv_s, full_s = stats(kv), stats(full)
    cpu_variants = cpu_sampling_variants(model, timed, repeats) if device == "cpu" else {}
    return {"cpu_kv_tokens_per_s": cpu_variants, "model": source, "device": device, "params_m": model.get_num_params() / 1e6,
            "block_size": model.config.block_size, "prompt_tokens": prompt.size(1), "new_tokens": new_tokens,
            "batch_size": 1, "repeats": repeats, "greedy_tokens_equal": same, "distinct_new_tokens": distinct,
            "kv_tokens_per_s": kv_s["median"], "nocache_tokens_per_s": full_s["median"],
            "kv_speedup": kv_s["median"] / full_s["median"],
            "stats": {"kv_tokens_per_s": kv_s, "nocache_tokens_per_s": full_s}}


def cpu_sampling_variants(model, timed, repeats):
    """KV-cache tokens/s (median) on CPU with 1 thread and PyTorch's default count, fp32 and bf16 weights: what
    sample.py's --threads default and its fp32 weights rest on."""
    import copy

    import torch

    default = torch.get_num_threads()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    out = {}
    try:
        for threads in sorted({1, default}):
            torch.set_num_threads(threads)
            for name, m in (("fp32", model), ("bf16_weights", bf16)):
                timed(True, m)  # warm-up at this thread count
                out[f"{name}_threads{threads}"] = stats([timed(True, m)[1] for _ in range(repeats)])["median"]
    finally:
        torch.set_num_threads(default)
    return out


def bench_data(repeats):
    """Throughput and peak memory of preparing the default corpus from its cached npm tarballs."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out_dir:
            cmd = [sys.executable, str(ROOT / "data/solidity-packages/prepare.py"), f"--out_dir={out_dir}", "--quiet"]
            code, wall, peak_rss_mb, output = run_child(cmd)
            if code != 0:
                fail("data/solidity-packages/prepare.py", output)
            meta = json.loads((Path(out_dir) / "meta.json").read_text())
        runs.append((wall, peak_rss_mb, meta))
    source_mb = runs[0][2]["dedup"]["input_bytes"] / 1e6  # .sol bytes read, before filtering
    mbps = stats([source_mb / wall for wall, _, _ in runs])
    rss = stats([r for _, r, _ in runs])
    return {"dataset": "solidity-packages", "source_mb": source_mb, "repeats": repeats,
            "prepare_mb_per_s": mbps["median"], "prepare_s": statistics.median(w for w, _, _ in runs),
            "peak_rss_mb": rss["median"], "note": "npm tarballs already cached: fetch time excluded",
            "stats": {"prepare_mb_per_s": mbps, "peak_rss_mb": rss}}


def bench_tokenizer():
    """Bytes per token of each tokenizer on the default corpus's validation documents."""
    from dataloader import PreparedDataset
    from tokenizer import get_tokenizer
    from tokenizer.compare import measure_named
    data = PreparedDataset("solidity-packages", ROOT / "data")
    # The prepared split holds the exact document texts (the tokenizer round-trips), separated by eot.
    tok = get_tokenizer(data.meta["tokenizer"])
    ids = np.asarray(data.splits["val"], dtype=np.int64)
    ends = np.flatnonzero(ids == data.meta["eot_token"])
    docs = [tok.decode(ids[a + 1:b].tolist()) for a, b in zip(np.concatenate([[-1], ends[:-1]]), ends)]
    measured = measure_named(["solgpt", "gpt2", "cl100k_base"], docs)
    return {"texts": "data/solidity-packages val split (held-out packages)", "documents": len(docs),
            "bytes": sum(len(d.encode()) for d in docs),
            "bytes_per_token": {n: m["bytes_per_token"] for n, m in measured.items() if "bytes_per_token" in m},
            "unavailable": {n: m["unavailable"] for n, m in measured.items() if "unavailable" in m}}


def tokens_per_iter(cfg):
    """Tokens of one full optimizer step of a config (all micro-batches, all ranks)."""
    return cfg["gradient_accumulation_steps"] * cfg["batch_size"] * cfg["block_size"]


def bench_quality(config, device, budget_s, tokens_per_s, iters=None, keep_model=None, startup_s=0.0):
    """Train from scratch for a fixed wall-clock budget and report the exact validation bits per byte of the whole
    val split (train.py's final evaluation, see evaluate.py).

    The budget becomes an iteration count (iters_for_budget: measured tokens/s) and the learning-rate schedule is
    fitted to it, so the run itself is deterministic (fixed seed, data and iterations). Timing noise can move the
    derived count between runs; pass --quality_iters to pin it when comparing two versions of the code.
    keep_model: a directory that receives the run's out_dir (model.pt, train_state.pt, metrics.jsonl, log.txt).
    startup_s: bench_train's measurement of the start-up; when the config compiles, that is its compile time, which
    comes out of the budget."""
    cfg = load_config(config)
    compile_s = startup_s if cfg["compile"] else 0.0
    iters = iters or iters_for_budget(budget_s, tokens_per_s, tokens_per_iter(cfg), compile_s)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(keep_model) if keep_model else Path(tmp)
        overrides = [f"--out_dir={out_dir}", f"--max_iters={iters}", f"--lr_decay_iters={iters}",
                     f"--warmup_iters={min(cfg['warmup_iters'], iters // 10)}", f"--eval_interval={iters}",
                     f"--device={device}", "--always_save_checkpoint=False"]
        code, wall, _, output = run_child(train_cmd(config, overrides))
        if code != 0:
            fail(f"quality run ({config})", output)
        _, evals = read_metrics(out_dir / "metrics.jsonl")
    final = [r for r in evals if r.get("final")][-1]
    report = {"config": shown(config), "device": device, "budget_s": budget_s, "iters": iters, "wall_s": wall,
              "seed": cfg["seed"], "dataset": cfg["dataset"], "val_bpb": final["val_bpb"],
              "val_loss": final["val_loss"], "val_tokens": final["val_tokens"], "val_bytes": final["val_bytes"],
              "train_loss": final["train_loss"], "sampled_val_bpb": final["sampled_val_bpb"], "compile_s": compile_s}
    if keep_model:
        report["model_dir"] = str(out_dir)
    return report


def macro_ap(ap):
    """Mean average precision over the classes that have positives (None without any)."""
    known = [a for a in ap if a is not None]
    return float(np.mean(known)) if known else None


def vuln_scores(y_true, probs, thresholds, majority, tfidf_probs, tfidf, tfidf_info, examples):
    """The vuln section's numbers for one test split: ours per class, micro/macro F1 and, threshold-free, average
    precision (how well the files are ranked, whatever the cut tuned on validation); the baselines' macro F1 and
    TF-IDF's average precision; how sure the macro F1 comparison with TF-IDF is (95% intervals over resamples of the
    split's source files, each with its injected variants); and, per class, the files each of the two got wrong."""
    import vuln
    pred = vuln.decide(probs, thresholds)
    ours, theirs = vuln.f1_scores(y_true, pred), vuln.f1_scores(y_true, tfidf)
    boot = vuln.bootstrap_macro_f1(y_true, pred, tfidf, [vuln.source_of(e) for e in examples])
    names = [e["name"] for e in examples]
    ap, tfidf_ap = vuln.average_precision(y_true, probs), vuln.average_precision(y_true, tfidf_probs)
    per_class = {c: {**v, "average_precision": a} for (c, v), a in zip(ours["per_class"].items(), ap)}
    return {"n_test": int(len(y_true)), "per_class": per_class, "micro_f1": ours["micro_f1"],
            "macro_f1": ours["macro_f1"], "macro_ap": macro_ap(ap), "baseline_tfidf_macro_ap": macro_ap(tfidf_ap),
            "baseline_majority_macro_f1": vuln.f1_scores(y_true, majority)["macro_f1"],
            "baseline_tfidf_macro_f1": theirs["macro_f1"], "baseline_tfidf_micro_f1": theirs["micro_f1"],
            "baseline_tfidf_per_class_f1": {c: v["f1"] for c, v in theirs["per_class"].items()},
            "baseline_tfidf": tfidf_info, "macro_f1_ci95": boot["ours_ci95"],
            "baseline_tfidf_macro_f1_ci95": boot["theirs_ci95"], "macro_f1_minus_tfidf_ci95": boot["diff_ci95"],
            "share_resamples_above_tfidf": boot["share_ours_higher"],
            "bootstrap": {"by": "source file (with its injected variants)", "n_groups": boot["n_groups"],
                          "n_resamples": boot["n_resamples"]},
            "by_project": vuln.scores_by_group(y_true, pred, tfidf, [e["group"] for e in examples])
            if len({e["group"] for e in examples}) <= 20 else None,  # a Hub split's groups are its contracts
            "errors": vuln.errors_by_class(y_true, pred, probs, names),
            "baseline_tfidf_errors": vuln.errors_by_class(y_true, tfidf, tfidf_probs, names)}


def bench_vuln(ckpt_path, device, hub_path=None):
    """A classifier's F1 on the held-out split of data/slither-labels (and on the Hub dataset's big-multilabel test
    split when data/slither-audited-smart-contracts is prepared), beside the majority and TF-IDF baselines trained
    on the same train split with thresholds tuned on the same validation split. The model's thresholds are those
    it stored (tuned on its validation split during training)."""
    from contextlib import nullcontext

    import classify
    import vuln
    from tokenizer import get_dataset_tokenizer
    model, ckpt = classify.load_classifier(ckpt_path, device)
    tok = get_dataset_tokenizer(ckpt)
    T, W = model.config.block_size, ckpt["max_windows"]

    def reference(splits, source):
        """What every test split of these train/val splits shares: TF-IDF fitted on them, and whether they are the
        ones the classifier was fitted and tuned on (None for checkpoints that do not say)."""
        same = ckpt["split_digest"] == vuln.split_digest(splits) if "split_digest" in ckpt else None
        if same is False:
            print(f"warning: {source}: the train/validation files differ from those {shown(ckpt_path)} was trained "
                  "and tuned on (the labels changed, or it was trained on another dataset): TF-IDF is fitted on "
                  "these, so the two are not compared on equal terms; retrain the classifier", file=sys.stderr)
        return vuln.tfidf_baseline(splits), same

    def evaluate(splits, source, fitted):
        """fitted: reference(...) of these train/val splits (once for every test split of theirs)."""
        windows = vuln.encode_files(tok, [e["text"] for e in splits["test"]], T, W, ckpt.get("strip_comments", False))
        probs, _ = vuln.predict(model, windows, nullcontext(), device=device, max_windows=W)
        y = vuln.targets(splits["test"])
        (predict_tfidf, info), same = fitted
        tfidf, tfidf_probs = predict_tfidf(splits["test"])
        out = vuln_scores(y, probs, ckpt["thresholds"], vuln.majority_baseline(splits), tfidf_probs, tfidf, info,
                          splits["test"])
        return {"test_split": source, "n_train": len(splits["train"]), "n_val": len(splits["val"]),
                "same_split_as_training": same, **out}

    try:
        splits = vuln.offline_splits(ckpt.get("val_fraction", 0.2), extra_train=ckpt.get("extra_train", False))
        fitted = reference(splits, "data/slither-labels")
        report = {"ckpt": shown(ckpt_path), "iter_num": ckpt["iter_num"], "thresholds": ckpt["thresholds"],
                  "thresholds_iter": ckpt.get("thresholds_iter"), "classes": ckpt["classes"],
                  **evaluate(splits, "data/slither-labels held_out (the default corpus's val packages)", fitted)}
        try:  # a second test split: its tarballs may be out of reach here; the held-out report still stands
            new = vuln.new_protocols_test()
        except vuln.DataError as e:
            new, report["new_protocols"] = None, {"skipped": str(e)}
            print(f"warning: new-protocol test split skipped: {e}", file=sys.stderr)
        if new:
            report["new_protocols"] = evaluate({**splits, "test": new}, "data/slither-labels new protocols "
                                               "(labels_new_protocols.json: protocols outside the default corpus)",
                                               fitted)
        if hub_path is not None or (ROOT / "data/slither-audited-smart-contracts/meta.json").is_file():
            hub = vuln.hub_splits(hub_path)
            source = f"{'local' if hub_path else 'Hub'} slither-audited-smart-contracts"
            report["hub_test"] = evaluate(hub, f"{source} big-multilabel test", reference(hub, source))
    except vuln.DataError as e:
        raise SystemExit(f"error: {e}") from None
    return report


# ----------------------------------------------------------------------------------------------------------------
# report


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def table(report):
    rows = [("", "")]
    t, s, d, k, q, v = (report.get(n) for n in SECTIONS)
    if t:
        rows += [("train config", t["config"]), ("train tokens/s", fmt(t["tokens_per_s"], ",.0f")),
                 ("train ms/iter", fmt(t["ms_per_iter"], ".1f")), ("train MFU", fmt(t["mfu"] * 100, ".2f") + " %"),
                 (f"train peak memory ({t['peak_memory_kind']})", fmt(t["peak_memory_mb"], ",.0f") + " MB")]
    if s:
        rows += [(f"sample tokens/s, KV cache ({s['new_tokens']} new)", fmt(s["kv_tokens_per_s"], ",.1f")),
                 (f"sample tokens/s, no cache ({s['new_tokens']} new)", fmt(s["nocache_tokens_per_s"], ",.1f")),
                 ("sample KV-cache speedup", fmt(s["kv_speedup"], ".2f") + "x")]
        rows += [(f"sample tokens/s, KV cache, {name.replace('_', ' ')}", fmt(v, ",.1f"))
                 for name, v in s.get("cpu_kv_tokens_per_s", {}).items()]
    if d:
        rows += [("prepare MB/s (solidity-packages)", fmt(d["prepare_mb_per_s"], ".2f")),
                 ("prepare peak RSS", fmt(d["peak_rss_mb"], ",.0f") + " MB")]
    if k:
        rows += [(f"bytes/token {name}", fmt(v, ".3f")) for name, v in k["bytes_per_token"].items()]
        rows += [(f"bytes/token {name}", "unavailable offline") for name in k["unavailable"]]
    if q:
        rows += [(f"quality val bpb, whole val split ({q['budget_s']:.0f} s, {q['iters']} iters)",
                  fmt(q["val_bpb"], ".4f"))]
    if v and v.get("thresholds_iter") not in (None, v["iter_num"]):
        rows.append(("vuln thresholds", f"tuned at iter {v['thresholds_iter']}, weights from iter {v['iter_num']}: "
                                        "finish the run with --init_from=resume"))
    for name, part in (("held-out", v), ("new protocols", (v or {}).get("new_protocols")),
                       ("Hub test", (v or {}).get("hub_test"))):
        if part and "skipped" in part:
            rows.append((f"vuln {name}", f"skipped: {part['skipped']}"))
        elif part:
            if part.get("same_split_as_training") is False:
                rows.append((f"vuln {name} train/validation split", "differs from the classifier's: retrain it"))
            rows += [(f"vuln {name} F1 {c} (n={x['support']})", fmt(x["f1"], ".3f")) for c, x in part["per_class"].items()]
            rows += [(f"vuln {name} micro / macro F1 (n_test {part['n_test']})",
                      f"{part['micro_f1']:.3f} / {part['macro_f1']:.3f}"),
                     (f"vuln {name} macro F1: majority / TF-IDF baselines",
                      f"{part['baseline_majority_macro_f1']:.3f} / {part['baseline_tfidf_macro_f1']:.3f}"),
                     (f"vuln {name} macro average precision (threshold-free): ours / TF-IDF",
                      f"{fmt(part.get('macro_ap'), '.3f')} / {fmt(part.get('baseline_tfidf_macro_ap'), '.3f')}"),
                     (f"vuln {name} macro F1 minus TF-IDF's, 95% interval over {part['bootstrap']['n_groups']} "
                      "source files (resampled)", "{:+.3f} [{:+.3f}, {:+.3f}], ours higher in {:.0%}".format(
                          part["macro_f1"] - part["baseline_tfidf_macro_f1"], *part["macro_f1_minus_tfidf_ci95"],
                          part["share_resamples_above_tfidf"]))]
    m = report["machine"]
    rows[0] = ("machine", f"{m['gpu'] or m['cpu']}, {m['cores']} cores, torch {m['torch']}")
    rows.insert(0, ("measure", "value"))
    width = max(len(a) for a, _ in rows)
    lines = [f"| {a:<{width}} | {b} |" for a, b in rows]
    lines.insert(1, f"|{'-' * (width + 2)}|---|")  # a Markdown table, ready for README.md
    return "\n".join(lines)


def write_json_atomic(path, obj):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def parse_args(argv):
    p = ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="finish in under 5 minutes on 2 cores")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--out", default="bench_report.json", help="JSON report path (default: bench_report.json)")
    p.add_argument("--only", default=",".join(DEFAULT_SECTIONS),
                   help=f"comma-separated sections of {','.join(SECTIONS)} (default: all but vuln)")
    p.add_argument("--config", help="train config (default: config/train_cpu.py; config/train_gpt2_124m.py on cuda)")
    p.add_argument("--budget_s", type=float, help="quality training budget in seconds (default 600; --quick 120)")
    p.add_argument("--quality_iters", type=int, help="pin the quality run's iterations (default: budget / ms per iter)")
    p.add_argument("--ckpt", help="sample with this trained model.pt instead of random weights of the CPU config; "
                                  "vuln: the classifier to evaluate")
    p.add_argument("--hub_path", help="vuln: a local copy of the Hub dataset's Parquet export (default: the Hub, "
                                      "when data/slither-audited-smart-contracts is prepared)")
    p.add_argument("--keep_model", help="quality: train into this directory and keep it (model.pt, metrics, ...)")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {','.join(bad)}: choose from {','.join(SECTIONS)}")
    if "vuln" in sections and not args.ckpt:
        p.error("--only=vuln evaluates a classifier: pass --ckpt=out-vuln-cpu/model.pt (train it with "
                "config/finetune_vuln_cpu.py)")
    if args.budget_s is not None and args.budget_s <= 0:
        p.error("--budget_s must be positive")
    if args.keep_model and "quality" not in sections:
        p.error("--keep_model keeps the model of the quality section: add quality to --only")
    if args.keep_model and Path(args.keep_model).exists() and any(Path(args.keep_model).iterdir()):
        p.error(f"--keep_model={args.keep_model} is not empty: name a new directory")
    return args, sections


def main(argv=None):
    args, sections = parse_args(argv)
    cpu_config = ROOT / "config" / "train_cpu.py"
    gpu = args.device.startswith("cuda")
    train_config = Path(args.config) if args.config else (ROOT / "config/train_gpt2_124m.py" if gpu else cpu_config)
    if not train_config.is_file():
        raise SystemExit(f"error: config file {train_config} not found")
    needs_data = {"train", "tokenizer", "quality"} & set(sections)
    if needs_data and not (ROOT / "data/solidity-packages/meta.json").is_file():
        raise SystemExit("error: data/solidity-packages is not prepared: run python data/solidity-packages/prepare.py")
    report = {"machine": machine_info(args.device), "quick": args.quick,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    repeats = 2 if args.quick else 5
    t_start = time.perf_counter()
    if "train" in sections:
        extra = ["--dtype=bfloat16", "--compile=True"] if gpu else []
        iters, warmup = (10, 3) if args.quick else (30, 5)
        if gpu:
            iters, warmup = 30, 10  # compile and autotune settle in the first steps
        print(f"train: {shown(train_config)} ...", flush=True)
        report["train"] = bench_train(train_config, args.device, iters, warmup, extra)
    if "sample" in sections:
        print("sample: KV cache vs full recomputation, 512 new tokens ...", flush=True)
        report["sample"] = bench_sample(cpu_config, args.device, 512, repeats, args.ckpt)
    if "data" in sections:
        print("data: preparing solidity-packages from the cached tarballs ...", flush=True)
        report["data"] = bench_data(1 if args.quick else 3)
    if "tokenizer" in sections:
        print("tokenizer: bytes per token on the validation split ...", flush=True)
        report["tokenizer"] = bench_tokenizer()
    if "quality" in sections:
        budget = args.budget_s or (120.0 if args.quick else 600.0)
        # The quality run always trains the CPU config; its measured speed on this device sets the iteration count.
        same = "train" in report and not gpu and train_config.resolve() == cpu_config.resolve()
        measured = report["train"] if same else None
        if measured is None and not args.quality_iters:
            measured = bench_train(cpu_config, args.device, 10, 3, [])
        tps, startup_s = (measured["tokens_per_s"], measured["startup_s"]) if measured else (None, 0.0)
        print(f"quality: config/train_cpu.py for {budget:.0f} s ...", flush=True)
        report["quality"] = bench_quality(cpu_config, args.device, budget, tps, args.quality_iters, args.keep_model,
                                          startup_s)
    if "vuln" in sections:
        print(f"vuln: {args.ckpt} on the held-out split, and the majority and TF-IDF baselines ...", flush=True)
        report["vuln"] = bench_vuln(args.ckpt, args.device, args.hub_path)
    report["wall_s"] = time.perf_counter() - t_start
    write_json_atomic(args.out, report)
    print(table(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
