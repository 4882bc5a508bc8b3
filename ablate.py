"""
Model ablations at a fixed wall-clock budget (issue 9's table): each variant is a named set of --key=value overrides
on config/train_cpu_gpt2.py (the GPT-2 recipe that was the default; the ablation chose config/train_cpu.py's). For each variant this measures its own training speed (ms/iter over --speed_iters iterations
after --speed_warmup of warm-up), turns the budget into iterations (budget_s x tokens/s / tokens per full iteration, so every variant gets the
same wall-clock time), trains that many iterations with the learning-rate schedule fitted to them (lr_decay_iters =
iters) once per seed, and reads the run's final exact validation bits per byte. Then it prints a Markdown table.

    python ablate.py --list                                   # the predefined variants and their overrides
    python ablate.py                                          # all of them, 600 s x 2 seeds each (many hours)
    python ablate.py --variants=baseline,rope,alibi --budget_s=120 --out=ablation-quick.json
    python ablate.py --add=rope_fast:pos_encoding=rope,learning_rate=3e-3 --variants=baseline,rope_fast
    python ablate.py --table                                  # print the table of what --out holds, run nothing

Speeds belong to one machine: a results file records the CPU its speeds were measured on and refuses to measure
another speed elsewhere (that would mix two machines' budgets). The training runs have fixed iterations, so they run
anywhere and under any load; each records the CPU it ran on. A variant that differs from another only in knobs that
do not change the time of a step (SPEED_NEUTRAL_KEYS: learning rates, init, ...) trains for that variant's speed.

Resumable: results go to --out (JSON, written atomically after every measurement) and a finished speed measurement
or seed run is never redone, so an interrupted ablation continues where it stopped; a variant whose overrides changed
is measured again. A variant that fails (e.g. a knob this train.py does not have yet) is recorded with its error,
the others still run, and the command exits with 1 at the end; the next invocation retries it.
"""
import json
import statistics
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench import bench_train, iters_for_budget, load_config, tokens_per_iter, machine_info, run_child, shown, train_cmd, write_json_atomic  # noqa: E402
from common import ArgumentParser  # noqa: E402
from plot import read_records  # noqa: E402

# name -> overrides on the config. Knob names as the lead decided them (HELPERS.md); a variant whose knob this
# train.py does not know yet fails alone with the configurator's message.
LLAMA_MUON = ["--pos_encoding=rope", "--norm=rmsnorm", "--mlp=swiglu", "--qk_norm=True", "--optimizer=muon"]
# the FIM stack at AdamW 8e-3 in bf16 with torch.compile, its cosine down to 0: the base of the last rows
FAST_MIN0 = [*LLAMA_MUON, "--fim_rate=0.5", "--learning_rate=8e-3", "--min_lr=0.0", "--dtype=bfloat16", "--compile=True"]
VARIANTS = {
    "baseline": [],
    "rope": ["--pos_encoding=rope"],
    "alibi": ["--pos_encoding=alibi"],
    "rmsnorm": ["--norm=rmsnorm"],
    "swiglu": ["--mlp=swiglu"],
    "relu2": ["--mlp=relu2"],
    "qk_norm": ["--pos_encoding=rope", "--qk_norm=True"],  # QK-norm as in Qwen3: with RoPE
    "untied": ["--tie_embeddings=False"],
    "zero_proj": ["--init=zero_proj"],
    "muon": ["--optimizer=muon"],
    # The ramp's knob names are the batch-ramp helper's; adjust here if they differ.
    "batch_ramp": ["--batch_ramp_start=0.25", "--batch_ramp_tokens=500000"],
    "bf16": ["--dtype=bfloat16"],
    "compile": ["--compile=True"],
    "llama_muon": LLAMA_MUON,
    # Fill in the middle (issue 12) on that stack: FIM's cost in left-to-right bits per byte at the same budget
    "llama_muon_fim": [*LLAMA_MUON, "--fim_rate=0.5"],
    "scaled": ["--init=scaled"],
    # The learning rates on the FIM stack: Muon's, then AdamW's (the tied embedding and the gains), which mattered
    "llama_muon_fim_mu02": [*LLAMA_MUON, "--fim_rate=0.5", "--muon_lr=0.02"],
    "llama_muon_fim_lr4e3": [*LLAMA_MUON, "--fim_rate=0.5", "--learning_rate=4e-3", "--min_lr=4e-4"],
    "llama_muon_fim_lr8e3": [*LLAMA_MUON, "--fim_rate=0.5", "--learning_rate=8e-3", "--min_lr=8e-4"],
    "llama_muon_fim_lr16e3": [*LLAMA_MUON, "--fim_rate=0.5", "--learning_rate=1.6e-2", "--min_lr=1.6e-3"],
    # Speed on a CPU with AMX: bf16 autocast and torch.compile (its compile time comes out of the budget)
    "llama_muon_fim_lr8e3_bf16_compile": [*LLAMA_MUON, "--fim_rate=0.5", "--learning_rate=8e-3", "--min_lr=8e-4",
                                          "--dtype=bfloat16", "--compile=True"],
    "llama_muon_fim_lr8e3_bf16_compile_min0": FAST_MIN0,
    # 2.3 epochs at that speed: train loss keeps falling while val flattens, so regularise: decoupled decay 0.1 -> 0.3,
    # 0.6 (the new default), 1.2
    "llama_muon_fim_lr8e3_bf16_compile_min0_wd03": [*FAST_MIN0, "--weight_decay=0.3"],
    "llama_muon_fim_lr8e3_bf16_compile_min0_wd06": [*FAST_MIN0, "--weight_decay=0.6"],
    "llama_muon_fim_lr8e3_bf16_compile_min0_wd12": [*FAST_MIN0, "--weight_decay=1.2"],
    # the one init that beat GPT-2's on the GPT-2 recipe (-0.5%, two seeds), tried on the new default
    "llama_muon_fim_lr8e3_bf16_compile_min0_wd06_scaled": [*FAST_MIN0, "--weight_decay=0.6", "--init=scaled"],
    # what that speed buys spent on a larger model instead of more epochs: 6 layers x 256 (4.7M in the blocks, 2.7x)
    "wide6x256_bf16_compile_min0": [*FAST_MIN0, "--n_layer=6", "--n_embd=256"],
    "deep8x256_bf16_compile_min0": [*FAST_MIN0, "--n_layer=8", "--n_embd=256"],
}
# The variant config/train_cpu.py is (tests/test_ablate.py checks that the two agree): the new default.
DEFAULT_VARIANT = "llama_muon_fim_lr8e3_bf16_compile_min0_wd06"
# Knobs that change what is learned but not how long a step takes: a variant that differs from another only in these
# trains for that variant's measured speed (the same iterations) instead of measuring its own, so a learning-rate or
# init change gets exactly the compute of its architecture, free of timing noise, and needs no idle machine.
SPEED_NEUTRAL_KEYS = {"learning_rate", "min_lr", "muon_lr", "muon_momentum", "warmup_iters", "weight_decay", "beta1",
                      "beta2", "grad_clip", "init", "rope_theta", "seed",
                      # FIM's batch-time transform: 2.1 ms of CPU per 4 x 512 micro-batch at fim_rate=0.5 (0.07 ms
                      # without; BatchSampler.get_batch timed with time.process_time on a 2-core EPYC), ~0.2% of a step
                      "fim_rate", "fim_spm_rate", "fim_syntax_rate"}

# Variants whose bits per byte at 2x the training block_size are asked for (the positional encodings' extrapolation).
LONG_CONTEXT_VARIANTS = ("baseline", "rope", "alibi")

# The final evaluation record: train.py's last metrics.jsonl record over the whole val split carries this flag set to
# true beside "val_bpb". If the flag gets another name, change this one line.
FINAL_FLAG = "final"


CURVE_POINTS = 5  # periodic evaluations of a kept run (--keep_models): its curve in plot.py --compare


def final_val_bpb(metrics_path):
    """(val_bpb, exact) of a finished run: the last record flagged FINAL_FLAG (the exact whole-val-split bpb), else
    the last periodic evaluation with exact=False (a train.py from before exact bpb); (None, False) if neither."""
    evals = [r for r in read_records(metrics_path) if r.get("val_bpb") is not None]
    finals = [r for r in evals if r.get(FINAL_FLAG) is True]
    if finals:
        return finals[-1]["val_bpb"], True
    return (evals[-1]["val_bpb"], False) if evals else (None, False)


def long_context_bpb(run_dir, dataset, data_root, device):
    """Exact val bpb of run_dir/model.pt (the run's final weights) over the whole val split in windows of twice its
    training block_size: whether a position encoding extrapolates (rope and alibi; learned positions end at
    block_size)."""
    import checkpoint
    from dataloader import PreparedDataset
    from evaluate import load_token_bytes, split_loss

    model, _ = checkpoint.load_model(Path(run_dir) / checkpoint.MODEL_FILE, device)
    data = PreparedDataset(dataset, data_root)
    token_bytes = load_token_bytes(data.meta, model.config.vocab_size).to(device)
    return split_loss(model, data.splits["val"], 2 * model.config.block_size, 4, nullcontext(), token_bytes,
                      device).bpb


def measure_speed(config, device, overrides, iters, warmup, compiles):
    """Median ms/iter and tokens/s of the variant from a short run (bench.py's train measurement); for a variant
    that compiles, also its compile time (from an empty cache), which comes out of its budget."""
    measured = bench_train(config, device, iters, warmup, overrides)
    speed = {"ms_per_iter": measured["ms_per_iter"], "tokens_per_s": measured["tokens_per_s"],
             "iters_measured": measured["iters_measured"]}
    if compiles:
        speed["compile_s"] = measured["startup_s"]
    return speed


def train_run(config, device, overrides, iters, seed, long_context, keep_dir=None):
    """Train one variant from scratch for iters iterations with one seed; its final val bpb and wall time.
    keep_dir: the run's out_dir (kept, e.g. for codeeval.py) instead of a temporary one; a kept run also evaluates
    CURVE_POINTS times on the way, for plot.py --compare (evaluation batches come from their own seeded stream, so
    this changes no training step and no final number)."""
    cfg = load_config(config, overrides)
    eval_interval = max(1, iters // CURVE_POINTS) if keep_dir else iters
    with (nullcontext(str(keep_dir)) if keep_dir else tempfile.TemporaryDirectory()) as out_dir:
        run = [f"--out_dir={out_dir}", f"--max_iters={iters}", f"--lr_decay_iters={iters}",
               f"--warmup_iters={min(cfg['warmup_iters'], iters // 10)}", f"--eval_interval={eval_interval}",
               f"--seed={seed}", f"--device={device}", "--always_save_checkpoint=False"]
        code, wall, _, output = run_child(train_cmd(config, [*overrides, *run]))
        if code != 0:
            tail = " | ".join(output.strip().splitlines()[-3:])
            raise RunFailed(f"train.py exited with {code}: {tail}")
        bpb, exact = final_val_bpb(Path(out_dir) / "metrics.jsonl")
        if bpb is None:
            raise RunFailed("train.py wrote no evaluation record")
        result = {"val_bpb": bpb, "exact": exact, "wall_s": wall}
        if long_context and cfg["pos_encoding"] != "learned":  # learned positions end at block_size
            result["long_bpb"] = long_context_bpb(out_dir, cfg["dataset"], cfg["data_root"], device)
        return result


class RunFailed(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------
# results file


def load_results(path, settings=None):
    """The results of earlier invocations with the same settings (any settings when None), or a fresh record."""
    path = Path(path)
    if not path.is_file():
        if settings is None:
            raise SystemExit(f"error: {path} not found: run the ablation first, or pass its --out")
        return {"settings": settings, "variants": {}}
    try:
        results = json.loads(path.read_text())
        old = results["settings"]
        results["variants"]
    except (ValueError, KeyError, TypeError):
        raise SystemExit(f"error: {path} is not an ablate.py results file; pass another --out") from None
    for key, value in (settings or {}).items():
        if old.get(key) != value:
            raise SystemExit(f"error: {path} holds results for {key}={old.get(key)!r}, not {value!r}; pass another "
                             f"--out (or the same settings) so the table compares like with like")
    return results


def variant_entry(results, name, overrides):
    """The cached entry of a variant; a fresh one when it is new or its overrides changed since it was measured."""
    entry = results["variants"].get(name)
    if entry is None or entry.get("overrides") != overrides:
        if entry is not None:
            print(f"{name}: overrides changed since the cached results; measuring again", flush=True)
        entry = {"overrides": overrides, "runs": {}}
        results["variants"][name] = entry
    return entry


# ----------------------------------------------------------------------------------------------------------------
# table


def mean_bpb(entry, seeds):
    runs = [entry.get("runs", {}).get(str(s)) for s in seeds]
    return statistics.mean(r["val_bpb"] for r in runs) if all(runs) else None


def verdict(name, entry, baseline, seeds, complete):
    """better / worse when every seed of the variant beats / trails every seed of the baseline, else within the seeds'
    noise; the chosen default (DEFAULT_VARIANT) says so."""
    if name == "baseline":
        return "(reference)"
    if not complete:
        return "-"
    mine = [entry["runs"][str(s)]["val_bpb"] for s in seeds]
    theirs = [baseline["runs"][str(s)]["val_bpb"] for s in seeds]
    word = "better" if max(mine) < min(theirs) else "worse" if min(mine) > max(theirs) else "within seed noise"
    return f"**{word}: the new default**" if name == DEFAULT_VARIANT else word


def render_table(results, seeds, names=None):
    """The Markdown table of the results (the variants in names, default all, in the file's order); the delta is
    against the baseline's mean over the same seeds, when the file has it."""
    everything = results["variants"]
    variants = {n: e for n, e in everything.items() if names is None or n in names}
    base = mean_bpb(everything["baseline"], seeds) if "baseline" in everything else None
    long = any(r.get("long_bpb") is not None for e in variants.values() for r in e.get("runs", {}).values())
    inexact = False
    head = ["variant", "overrides", "tokens/s", "iters", *[f"val bpb seed {s}" for s in seeds], "mean",
            "delta vs baseline", "verdict"]
    if long:
        head.append("bpb @2x block (mean)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for name, entry in variants.items():
        speed = entry.get("speed") or {}
        overrides = " ".join(f"`{o.removeprefix('--')}`" for o in entry["overrides"]) or "(config as is)"
        tokens_per_s = f"{speed['tokens_per_s']:,.0f}" if speed else "-"
        if entry.get("speed_from"):
            tokens_per_s += f" (as {entry['speed_from']})"
        cells = [name, overrides, tokens_per_s, str(entry.get("iters", "-"))]
        for s in seeds:
            run = entry.get("runs", {}).get(str(s))
            inexact |= bool(run) and not run["exact"]
            cells.append("-" if not run else f"{run['val_bpb']:.4f}" + ("" if run["exact"] else "*"))
        mean = mean_bpb(entry, seeds)
        cells.append(f"{mean:.4f}" if mean is not None else ("failed" if entry.get("error") else "-"))
        if mean is None or base is None:
            cells.append("-")
        elif name == "baseline":
            cells.append("(reference)")
        else:
            cells.append(f"{mean - base:+.4f} ({(mean - base) / base:+.1%})")
        cells.append(verdict(name, entry, everything.get("baseline"), seeds, mean is not None and base is not None))
        if long:
            values = [r["long_bpb"] for r in entry.get("runs", {}).values() if r.get("long_bpb") is not None]
            cells.append(f"{statistics.mean(values):.4f}" if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if inexact:
        lines.append("\n\\* sampled periodic evaluation: this train.py wrote no final whole-val-split record")
    errors = [f"- {name}: {e['error']}" for name, e in variants.items() if e.get("error")]
    if errors:
        lines += ["", "failed:", *errors]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# main


def parse_variant(spec):
    """NAME:key=value,key=value -> (NAME, ['--key=value', ...])"""
    name, _, body = spec.partition(":")
    pairs = [p.strip() for p in body.split(",") if p.strip()]
    if not name or not pairs or not all("=" in p for p in pairs):
        raise SystemExit(f"error: --add={spec} is not NAME:key=value[,key=value...]; "
                         f"e.g. --add=rope2:pos_encoding=rope")
    return name, [f"--{p.removeprefix('--')}" for p in pairs]


def parse_args(argv):
    p = ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--variants", help="comma-separated variant names (default: all; see --list)")
    p.add_argument("--add", action="append", default=[], metavar="NAME:K=V,K=V", help="define another variant")
    p.add_argument("--list", action="store_true", help="print the variants and exit")
    p.add_argument("--table", action="store_true", help="print the table of --out's results (for --seeds) and exit")
    p.add_argument("--config", default=str(ROOT / "config" / "train_cpu_gpt2.py"),
                   help="base config (default: config/train_cpu_gpt2.py, the old default)")
    p.add_argument("--budget_s", type=float, default=600.0, help="training wall-clock budget per run (default 600)")
    p.add_argument("--seeds", default="1337,1338", help="comma-separated seeds, one run each (default 1337,1338)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--speed_iters", type=int, default=20, help="iterations timed per speed measurement (default 20)")
    p.add_argument("--speed_warmup", type=int, default=5, help="warm-up iterations before timing (default 5)")
    p.add_argument("--speed_only", action="store_true",
                   help="measure (and cache) each variant's speed and iterations only, no training runs: do this on "
                        "an idle machine; the runs themselves give the same result under any load")
    p.add_argument("--keep_models", metavar="DIR",
                   help="keep each run's out_dir (model.pt, metrics.jsonl, ...) as DIR/<variant>-<seed>")
    p.add_argument("--out", default="ablation.json", help="results JSON, read to resume (default: ablation.json)")
    args = p.parse_args(argv)
    variants = dict(VARIANTS)
    variants.update(parse_variant(spec) for spec in args.add)
    names = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        p.error(f"unknown variant(s) {','.join(unknown)}: choose from {','.join(variants)} or define one with --add")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        p.error(f"--seeds must name at least one seed, each once, got {args.seeds!r}")
    if args.budget_s <= 0 or args.speed_iters <= 0 or args.speed_warmup < 0:
        p.error("--budget_s and --speed_iters must be positive, --speed_warmup >= 0")
    if not Path(args.config).is_file():
        p.error(f"config file {args.config} not found")
    return args, {n: variants[n] for n in names}, seeds


def speed_key(overrides):
    """The overrides that can change the time of a step (all but SPEED_NEUTRAL_KEYS), as a comparable set."""
    return frozenset(o for o in overrides if o.removeprefix("--").partition("=")[0] not in SPEED_NEUTRAL_KEYS)


def shared_speed(results, name, overrides):
    """(variant, its speed) of another variant in results with the same speed_key and a speed it measured itself,
    or None: a variant with speed-neutral overrides trains for the speed of a variant that differs from it only in
    those (the baseline's for an init change, llama_muon's for a learning-rate change of it)."""
    key = speed_key(overrides)
    if key == set(overrides):
        return None  # nothing speed-neutral: it measures its own
    for other, entry in results["variants"].items():
        if other != name and speed_key(entry["overrides"]) == key and "speed" in entry and "speed_from" not in entry:
            return other, entry["speed"]
    return None


def check_same_machine(results, device):
    """Speeds measured on another CPU would give iterations for another machine's budget: refuse to mix them."""
    here, there = machine_info(device).get("cpu"), results.get("machine", {}).get("cpu")
    if there is not None and here != there:
        raise SystemExit(f"error: the speeds in this results file were measured on {there!r}, this machine is "
                         f"{here!r}: a speed measured here would give another machine's budget; measure on that "
                         f"machine, or pass another --out for a table of this one")


def run_variant(name, overrides, entry, args, seeds, save, bar, results):
    """Measure one variant's speed (once; or take a speed-equivalent variant's) and train each missing seed; save
    after every measurement. Training runs have fixed iterations, so they may run on any machine and under load."""
    try:
        cfg = load_config(args.config, overrides)  # an unknown knob fails here, in a second, not after the speed run
        shared = shared_speed(results, name, overrides)
        if shared is not None:
            entry["speed_from"], entry["speed"] = shared
        elif "speed" not in entry or "speed_from" in entry or (cfg["compile"] and "compile_s" not in entry["speed"]):
            # (a compiling variant's speed from before compile time was measured: measured again, with it)
            entry.pop("speed_from", None)
            check_same_machine(results, args.device)
            bar.set_postfix_str(f"{name}: speed")
            entry["speed"] = measure_speed(args.config, args.device, overrides, args.speed_iters, args.speed_warmup,
                                           cfg["compile"])
        speed = entry["speed"]
        entry["iters"] = iters_for_budget(args.budget_s, speed["tokens_per_s"], tokens_per_iter(cfg),
                                          speed.get("compile_s", 0.0))
        save()
        for seed in [] if args.speed_only else seeds:
            if str(seed) not in entry["runs"]:
                bar.set_postfix_str(f"{name}: seed {seed}, {entry['iters']} iters")
                long = name in LONG_CONTEXT_VARIANTS
                keep = Path(args.keep_models) / f"{name}-{seed}" if args.keep_models else None
                run = train_run(args.config, args.device, overrides, entry["iters"], seed, long, keep)
                entry["runs"][str(seed)] = {**run, "cpu": machine_info(args.device)["cpu"]}
                save()
            bar.update(1)
        entry.pop("error", None)
    except (SystemExit, RunFailed) as e:  # bench's measurement and the configurator stop with SystemExit(message)
        lines = str(e).removeprefix("error: ").strip().splitlines() or ["failed"]
        entry["error"] = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"  # what, and why
        bar.update(len([s for s in seeds if str(s) not in entry["runs"]]))
        bar.write(f"{name}: failed: {entry['error']}")
    save()


def main(argv=None):
    from tqdm import tqdm

    args, variants, seeds = parse_args(argv)
    if args.list:
        for name, overrides in variants.items():
            print(f"{name:12s} {' '.join(overrides) or '(config as is)'}")
        return 0
    if args.table:  # the file's own settings, whatever the command line says
        print(render_table(load_results(args.out), seeds))
        return 0
    settings = {"config": shown(args.config), "budget_s": args.budget_s, "device": args.device}
    results = load_results(args.out, settings)
    results.setdefault("machine", machine_info(args.device))

    def save():
        write_json_atomic(args.out, results)

    entries = {name: variant_entry(results, name, overrides) for name, overrides in variants.items()}
    bar = tqdm(total=len(variants) * len(seeds), desc="ablation runs", unit="run")
    with bar:
        for name, entry in entries.items():
            run_variant(name, variants[name], entry, args, seeds, save, bar, results)
    print(render_table(results, seeds, names=variants))
    print(f"wrote {args.out}")
    failed = [n for n in variants if results["variants"][n].get("error")]
    if failed:
        print(f"error: {len(failed)} variant(s) failed ({', '.join(failed)}); rerun the same command to retry them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
