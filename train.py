"""
Train solGPT. One process on CPU, one GPU or Apple Silicon:

    python train.py config/train_cpu.py --max_iters=2000 --out_dir=out-cpu

Several GPUs (or CPU processes) with DistributedDataParallel:

    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m.py

Resume an interrupted run (same batches and random numbers as if it had never stopped):

    python train.py config/train_cpu.py --out_dir=out-cpu --init_from=resume

Fine-tune: a new run (iteration 0, fresh optimizer and schedule) that starts from a trained model's weights, with the
model's shape from that file (like resume) and any other knob (data, FIM, learning rate) from this command:

    python train.py config/train_cpu.py --init_from=out-cpu/model.pt --out_dir=out-ft --fim_rate=0.5

gradient_accumulation_steps is the global number of micro-batches per optimizer step (as in nanoGPT): under DDP each
rank does gradient_accumulation_steps / world_size of them, so tokens per iteration do not depend on the GPU count.
Writes out_dir/model.pt (weights), best_model.pt (best val loss), train_state.pt (weights + optimizer etc.: all that
resuming reads), log.txt and metrics.jsonl. A run ends with an evaluation over the whole validation split (exact bits
per byte, see evaluate.py): its metrics.jsonl record has "final": true. A scratch (or fine-tune) run into an out_dir
that holds an earlier run first moves that run's files into out_dir/previous/ (replacing an older previous/ only when
there is a trained model to put there), so nothing trained is lost and the new metrics start empty.
Ctrl-C (or SIGTERM) saves a checkpoint and exits; a second Ctrl-C kills at once.
"""

import collections
import json
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoint as ckpt_io  # noqa: E402
from common import sweep_stale_temp_files  # noqa: E402
import tracking  # noqa: E402
from configurator import configure  # noqa: E402
from dataloader import BatchSampler, DataError, Prefetcher  # noqa: E402
from evaluate import EvalError, LossSum, load_token_bytes, sampled_loss, split_loss  # noqa: E402
from model import GPT, GPTConfig, MODEL_CHOICES  # noqa: E402
from optim import OPTIMIZERS, build_optimizer, set_lr  # noqa: E402
from runtime import DTYPES, Dist, autocast, compile_unavailable, device_peak_flops, resolve_device, resolve_dtype  # noqa: E402
from schedule import TimeBudget, get_lr, micro_batches  # noqa: E402
from health import Health  # noqa: E402
import vuln  # noqa: E402

DEFAULTS = dict(
    # I/O
    out_dir="out",
    eval_interval=250,  # evaluate (and checkpoint) every this many iterations
    eval_iters=50,  # batches per split per evaluation
    log_interval=10,
    health_interval=50,  # per-layer grad norms and update/weight ratios every this many iterations (health.py); 0 off
    always_save_checkpoint=True,  # write model.pt at every evaluation; False: only when val loss improves
    init_from="scratch",  # 'scratch', 'resume' (from out_dir), or the path of a model.pt to fine-tune from
    task="lm",  # 'lm' (next-token prediction) or 'classify' (vulnerability classes of whole files, vuln.py)
    # data
    dataset="solidity-packages",  # data/<name>/ prepared by data/<name>/prepare.py; or a mixture 'a:0.7,b:0.3'
    data_root="data",
    gradient_accumulation_steps=1,  # global micro-batches per optimizer step (divided among DDP ranks)
    batch_size=12,  # micro-batch size per rank
    block_size=256,
    # linear batch-size ramp: tokens per optimizer step grow from batch_ramp_start of the full batch to all of it
    # over the first batch_ramp_tokens tokens (via fewer accumulated micro-batches; 0 = off). With a ramp,
    # max_iters, warmup_iters and lr_decay_iters count full-batch iterations' worth of tokens (see schedule.py).
    batch_ramp_tokens=0,
    batch_ramp_start=0.25,
    fim_rate=0.0,  # fill-in-the-middle (fim.py): share of training documents moved to FIM order; 0 = off
    fim_spm_rate=0.5,  # share of FIM documents in SPM order (the rest PSM)
    fim_syntax_rate=0.5,  # share of FIM split points at a whole function body or statement (tree-sitter)
    # model
    n_layer=6,
    n_head=6,
    n_embd=384,
    dropout=0.0,
    bias=False,
    # The architecture the ablation chose (README "Ablations"): Qwen3's (RoPE, RMSNorm, SwiGLU, QK-norm), which
    # export.py writes as a transformers Qwen3ForCausalLM. GPT-2's is learned + layernorm + gelu + qk_norm=False
    # (config/train_cpu_gpt2.py, config/train_gpt2_124m.py); model.GPTConfig keeps GPT-2's defaults, which are what a
    # checkpoint from before these knobs was.
    pos_encoding="rope",  # 'learned', 'rope' or 'alibi' (model.py explains these knobs)
    rope_theta=10000.0,
    norm="rmsnorm",  # or 'layernorm'
    mlp="swiglu",  # 'gelu', 'swiglu' or 'relu2'
    mlp_hidden=0,  # 0 = 4 * n_embd (swiglu: 8/3 * n_embd, rounded up to a multiple of 32)
    qk_norm=True,
    tie_embeddings=True,
    init="gpt2",  # 'gpt2', 'zero_proj' or 'scaled'
    # optimizer: 'adamw', or 'muon' (Muon for the blocks' weight matrices, AdamW for the rest; see optim.py)
    optimizer="adamw",
    muon_lr=0.01,  # Muon's peak lr, scheduled like learning_rate. 0.01 beat 0.02 (Keller Jordan's, for 0.5M-token
    # batches) and 0.04 in 100-iteration runs of config/train_cpu.py (4k-token batches)
    muon_momentum=0.95,
    # AdamW (with muon: for embeddings, head, gains and biases); learning_rate is also what the schedule follows
    learning_rate=6e-4,
    max_iters=5000,
    # train for this many seconds of wall clock instead (0 = off): max_iters = lr_decay_iters become the iterations
    # that fit at the speed measured over the warmup's second half (schedule.TimeBudget; compile time included,
    # evaluations not), decided once, logged and kept by a resume, so the run is deterministic after that.
    # --max_iters on the command line turns a config file's budget off (lr_decay_iters then follows it)
    budget_s=0.0,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,  # clip the global gradient norm to this; 0 disables clipping
    # learning rate schedule: linear warmup, cosine decay to min_lr at lr_decay_iters, then constant
    decay_lr=True,
    warmup_iters=100,
    lr_decay_iters=5000,
    min_lr=6e-5,
    # system
    device="auto",  # auto = cuda > mps > cpu; or cpu, cuda, cuda:1, mps
    dtype="auto",  # auto = bfloat16 where the GPU (or a CPU with AMX) runs it natively, else float16 (+ GradScaler)
    # on older GPUs; float32 on other CPUs and MPS
    compile=False,  # torch.compile the model (without a C++ compiler on a CPU, or on MPS, it runs eager and says so)
    seed=1337,
    peak_flops=0.0,  # device peak FLOP/s for MFU; 0 = look it up (runtime.PEAK_FLOPS)
    # run tracking: metrics.jsonl is always written; wandb mirrors it (tracking.py; WANDB_MODE=offline works)
    wandb_log=False,
    wandb_project="solgpt",
    wandb_run_name="",  # "" = wandb picks one
    # classification (task='classify', vuln.py): --dataset=slither-labels or slither-audited-smart-contracts
    cls_pool="attention",  # how a file's windows are pooled: 'attention', 'class_attention' (weights per output) or
    # 'max' (a model shape key)
    cls_token_pool="cls",  # a window's state: its <|cls|> position's ('cls'), the max over its positions ('max'), or
    # max and mean side by side ('maxmean')
    cls_head_hidden=0,  # classification: > 0 puts a hidden layer of this width (GELU) between the pooled state and
    # the outputs (a model shape key; 0: linear outputs)
    cls_max_windows=8,  # windows of block_size tokens per file at most (evenly spaced over a longer file)
    cls_window_shift=False,  # classification: cut each training file at a random offset per draw (augmentation)
    cls_strip_comments=False,  # classification: the model reads files without comments (recorded in model.pt)
    cls_val_fraction=0.2,  # slither-labels: share of train-side files (whole packages) held out for validation
    cls_extra_train=False,  # slither-labels: train on labels_extra_train.json's packages too (validation unchanged)
    cls_hub_path="",  # slither-audited-smart-contracts: a local copy of the Hub's Parquet export ("" = the Hub)
    cls_max_docs=0,  # slither-audited-smart-contracts: read at most this many rows per split (0 = all)
    cls_freeze_layers=0,  # classification: keep the embeddings and the lowest this many blocks fixed
    cls_head_lr_scale=1.0,  # classification: the head's learning rate is learning_rate times this
    cls_detector_weight=0.0,  # classification: > 0 also trains the head to predict the 38 Slither detectors behind
    # the classes (slither-labels has them), their mean BCE weighted by this beside the classes' (0 = classes only)
)

TASKS = ("lm", "classify")
# the head's model_args
CLASSIFIER_KEYS = ("n_classes", "n_detectors", "cls_pool", "cls_token_pool", "cls_head_hidden")
NON_SHAPE_KEYS = ("dropout",)  # model_args a resume may change; all others fix the shape of the trained weights
PREVIOUS_DIR = "previous"  # where a scratch run puts the earlier run it finds in out_dir
RUN_FILES = ("metrics.jsonl", "log.txt", ckpt_io.STATE_FILE, ckpt_io.MODEL_FILE, ckpt_io.BEST_FILE)


# ----------------------------------------------------------------------------------------------------------------
# setup


def validate_config(cfg):
    def need(ok, msg):
        if not ok:
            raise SystemExit(f"error: {msg}")

    for key in ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "eval_interval", "eval_iters",
                "log_interval", "gradient_accumulation_steps"):
        need(cfg[key] > 0, f"--{key} must be > 0, got {cfg[key]}")
    need(cfg["health_interval"] >= 0, f"--health_interval must be >= 0 (0 = off), got {cfg['health_interval']}")
    need(cfg["max_iters"] >= 0, f"--max_iters must be >= 0, got {cfg['max_iters']}")
    need(cfg["budget_s"] >= 0, f"--budget_s must be >= 0 (0 = train max_iters), got {cfg['budget_s']}")
    need(cfg["budget_s"] == 0 or (cfg["decay_lr"] and cfg["warmup_iters"] >= 10),
         f"--budget_s measures the speed during the warmup, whose learning rates do not depend on the run length: it "
         f"needs --warmup_iters >= 10 (got {cfg['warmup_iters']}) and --decay_lr=True")
    need(cfg["grad_clip"] >= 0, f"--grad_clip must be >= 0 (0 disables clipping), got {cfg['grad_clip']}")
    need(cfg["learning_rate"] > 0, f"--learning_rate must be > 0, got {cfg['learning_rate']}")
    need(0 <= cfg["min_lr"] <= cfg["learning_rate"],
         f"--min_lr must be in [0, learning_rate={cfg['learning_rate']}], got {cfg['min_lr']}")
    need(cfg["warmup_iters"] >= 0, f"--warmup_iters must be >= 0, got {cfg['warmup_iters']}")
    for key in ("beta1", "beta2"):
        need(0 <= cfg[key] < 1, f"--{key} must be in [0, 1), got {cfg[key]}")
    need(cfg["peak_flops"] >= 0, f"--peak_flops must be >= 0 (0 = look it up), got {cfg['peak_flops']}")
    need(cfg["n_embd"] % cfg["n_head"] == 0, f"--n_embd ({cfg['n_embd']}) must be a multiple of --n_head ({cfg['n_head']})")
    for key in ("fim_rate", "fim_spm_rate", "fim_syntax_rate"):
        need(0 <= cfg[key] <= 1, f"--{key} must be in [0, 1], got {cfg[key]}")
    need(0 <= cfg["dropout"] < 1, f"--dropout must be in [0, 1), got {cfg['dropout']}")
    need(cfg["init_from"] != "", f"--init_from must be 'scratch', 'resume' or the path of a model.pt, got ''")
    need(cfg["task"] in TASKS, f"--task must be one of {', '.join(TASKS)}, got {cfg['task']!r}")
    need(cfg["cls_max_windows"] > 0, f"--cls_max_windows must be > 0, got {cfg['cls_max_windows']}")
    need(0 < cfg["cls_val_fraction"] < 1, f"--cls_val_fraction must be in (0, 1), got {cfg['cls_val_fraction']}")
    need(not cfg["cls_extra_train"] or cfg["dataset"] == "slither-labels",
         f"--cls_extra_train adds offline-labelled packages: it needs --dataset=slither-labels, got {cfg['dataset']!r}")
    need(0 <= cfg["cls_freeze_layers"] <= cfg["n_layer"],
         f"--cls_freeze_layers must be in [0, n_layer={cfg['n_layer']}], got {cfg['cls_freeze_layers']}")
    need(cfg["cls_head_lr_scale"] > 0, f"--cls_head_lr_scale must be > 0, got {cfg['cls_head_lr_scale']}")
    need(cfg["cls_detector_weight"] >= 0, f"--cls_detector_weight must be >= 0, got {cfg['cls_detector_weight']}")
    need(cfg["task"] == "lm" or cfg["fim_rate"] == 0, "--fim_rate is for --task=lm")
    need(cfg["dtype"] in ("auto", *DTYPES), f"--dtype must be one of auto, {', '.join(DTYPES)}, got {cfg['dtype']!r}")
    for key, choices in {**MODEL_CHOICES, "optimizer": OPTIMIZERS}.items():
        need(cfg[key] in choices, f"--{key} must be one of {', '.join(choices)}, got {cfg[key]!r}")
    need(cfg["pos_encoding"] != "rope" or cfg["n_embd"] // cfg["n_head"] % 2 == 0,
         f"--pos_encoding=rope needs an even head size, got n_embd/n_head = {cfg['n_embd'] // cfg['n_head']}")
    need(cfg["rope_theta"] > 0, f"--rope_theta must be > 0, got {cfg['rope_theta']}")
    need(cfg["mlp_hidden"] >= 0, f"--mlp_hidden must be >= 0 (0 = the default width), got {cfg['mlp_hidden']}")
    need(cfg["muon_lr"] > 0, f"--muon_lr must be > 0, got {cfg['muon_lr']}")
    need(0 <= cfg["muon_momentum"] < 1, f"--muon_momentum must be in [0, 1), got {cfg['muon_momentum']}")
    need(cfg["batch_ramp_tokens"] >= 0, f"--batch_ramp_tokens must be >= 0 (0 = off), got {cfg['batch_ramp_tokens']}")
    need(0 < cfg["batch_ramp_start"] <= 1, f"--batch_ramp_start must be in (0, 1], got {cfg['batch_ramp_start']}")
    need(cfg["batch_ramp_tokens"] == 0 or cfg["gradient_accumulation_steps"] > 1,
         "--batch_ramp_tokens ramps the number of accumulated micro-batches: it needs "
         "--gradient_accumulation_steps > 1 (use more, smaller micro-batches)")


def command_line_keys(argv):
    argv = sys.argv[1:] if argv is None else argv
    return {a[2:].partition("=")[0] for a in argv if a.startswith("--")}


def explicit_keys(cfg, argv):
    """Keys the user set: on the command line, or to a non-default value in a config file."""
    return command_line_keys(argv) | {k for k, v in cfg.items() if v != DEFAULTS.get(k)}


def model_args_from(cfg, vocab_size):
    padded = (vocab_size + 63) // 64 * 64  # a multiple of 64 keeps the lm_head matmul on fast kernels
    return dict(n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"], block_size=cfg["block_size"],
                bias=cfg["bias"], vocab_size=padded, dropout=cfg["dropout"], pos_encoding=cfg["pos_encoding"],
                rope_theta=cfg["rope_theta"], norm=cfg["norm"], mlp=cfg["mlp"], mlp_hidden=cfg["mlp_hidden"],
                qk_norm=cfg["qk_norm"], tie_embeddings=cfg["tie_embeddings"], init=cfg["init"],
                **classifier_args(cfg))


def classifier_args(cfg):
    """The head's model_args: 6 classes (and the 38 detectors with cls_detector_weight) for task='classify', none
    for a language model."""
    if cfg["task"] != "classify":
        return {}
    return dict(n_classes=len(vuln.CLASSES), n_detectors=len(vuln.DETECTORS) if cfg["cls_detector_weight"] else 0,
                **{k: cfg[k] for k in CLASSIFIER_KEYS if not k.startswith("n_")})


# ----------------------------------------------------------------------------------------------------------------
# one optimizer step


def accumulate_gradients(model, batches, ctx, scaler, n_micro):
    """Forward/backward over n_micro (x, y) micro-batches; .grad ends up holding the gradient of their mean loss.
    Each loss is divided by n_micro, so k micro-batches give the gradient of one k-times larger batch.
    Under DDP the gradient all-reduce runs only on the last micro-batch (no_sync before it).
    Returns the mean loss (detached tensor, still on the device: reading it would wait for the GPU)."""
    total = 0.0
    for micro in range(n_micro):
        x, y = next(batches)
        last = micro == n_micro - 1
        sync = nullcontext() if (last or not isinstance(model, DDP)) else model.no_sync()
        with sync:
            with ctx:
                _, loss = model(x, y)
            loss = loss / n_micro
            scaler.scale(loss).backward()
        total = total + loss.detach().float()
    return total


def clip_and_norm(model, optimizer, scaler, grad_clip):
    """Unscale (fp16), clip, and return the global gradient norm before clipping (a device tensor)."""
    scaler.unscale_(optimizer)
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def agree(values, dist_info):
    """All-reduce a few floats (summed) so every rank takes the same decision (stop, non-finite loss)."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist_info.enabled:
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = t.to(backend_device)
        dist.all_reduce(t)
    return t.cpu().tolist()


@torch.no_grad()
def ranks_agree(model):
    """True when every rank holds the same weights (per-tensor sums and sums of squares, compared exactly):
    DDP keeps them identical unless something is broken, and a silent divergence would waste the whole run."""
    sums = torch.stack([s for p in model.parameters() for s in (p.double().sum(), p.double().pow(2).sum())])
    if dist.get_backend() == "nccl":
        sums = sums.cuda()
    lo, hi = sums.clone(), sums.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))


def sampled_losses(model, sampler, eval_iters, ctx, token_bytes, dist_info):
    """Periodic evaluation: a LossSum per split over eval_iters fixed batches per rank, summed over ranks."""
    out = {}
    for split in ("train", "val"):
        batches = (sampler.get_batch(split, index=k) for k in range(eval_iters))
        out[split] = LossSum(*agree(sampled_loss(model, batches, ctx, token_bytes).as_list(), dist_info))
    return out


def whole_val_loss(model, sampler, ctx, token_bytes, device, dist_info):
    """Final evaluation: the LossSum of every window of the whole val split (of each dataset of a mixture)."""
    total = [0.0, 0, 0]
    for ds in sampler.datasets:
        part = split_loss(model, ds.splits["val"], sampler.block_size, sampler.batch_size, ctx, token_bytes, device,
                          dist_info.rank, dist_info.world_size, progress=dist_info.master)
        total = [a + b for a, b in zip(total, part.as_list())]
    return LossSum(*agree(total, dist_info))


# ----------------------------------------------------------------------------------------------------------------
# logging and checkpoints


class RunLog:
    """Console + out_dir/log.txt lines, and out_dir/metrics.jsonl records; only the master rank writes."""

    def __init__(self, out_dir, enabled, tracker=None):
        self.enabled = enabled
        self.tracker = tracker  # tracking.WandbRun or None: gets every metrics record too
        self.out_dir = Path(out_dir)
        if enabled:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.log = open(self.out_dir / "log.txt", "a", buffering=1)
            self.metrics_file = open(self.out_dir / "metrics.jsonl", "a", buffering=1)

    def info(self, line):
        if self.enabled:
            print(line, flush=True)
            self.log.write(line + "\n")

    def error(self, line):
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
            self.log.write(line + "\n")

    def metrics(self, record):
        if self.enabled:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()
        if self.tracker:
            self.tracker.log(record)

    def close(self):
        if self.enabled:
            self.log.close()
            self.metrics_file.close()
        if self.tracker:
            self.tracker.finish()


def trim_metrics(path, iter_num, keep_eval_at_iter=True):
    """On resume, drop records written after the checkpoint (a run killed past its last checkpoint redoes those
    iterations), so metrics.jsonl holds exactly one record per iteration and evaluation. The evaluation at the
    checkpoint's own iteration stays only if the checkpoint says it was done (else the resumed run does it)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        is_eval = "val_loss" in rec
        if rec.get("iter", 0) < iter_num or (keep_eval_at_iter and is_eval and rec.get("iter") == iter_num):
            kept.append(line)
    ckpt_io.atomic_write(path, lambda f: f.write("".join(k + "\n" for k in kept).encode()))


def set_aside_earlier_run(out_dir):
    """A scratch run must neither append to an earlier run's metrics nor leave its train state for a later resume,
    and must not lose a trained model before it has one of its own: the earlier run's files move, together, into
    out_dir/previous/ (one rename each). An older previous/ is replaced only when there is a checkpoint to put in
    its place; an earlier run that never saved one leaves only its logs, which are removed.
    Returns a line for the log, or None when out_dir held no earlier run."""
    out_dir = Path(out_dir)
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return None
    if not any(name in (ckpt_io.STATE_FILE, ckpt_io.MODEL_FILE, ckpt_io.BEST_FILE) for name in present):
        for name in present:
            (out_dir / name).unlink()
        return f"scratch run: removed {', '.join(present)} of an earlier run that saved no checkpoint"
    staging = out_dir / f".{PREVIOUS_DIR}.tmp{os.getpid()}"  # complete before it replaces previous/
    staging.mkdir()
    for name in present:
        os.replace(out_dir / name, staging / name)
    previous = out_dir / PREVIOUS_DIR
    if previous.exists():
        shutil.rmtree(previous)
    os.replace(staging, previous)
    return f"scratch run: moved the earlier run's {', '.join(present)} to {previous}"


def rng_state(device):
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_resume(out_dir):
    """out_dir/train_state.pt: weights and training state, written together in one atomic file."""
    try:
        return ckpt_io.load_train_state(Path(out_dir) / ckpt_io.STATE_FILE)
    except ckpt_io.CheckpointError as e:
        raise SystemExit(f"error: cannot resume: {e}") from None


INIT_HINT = "--init_from takes scratch, resume (out_dir's run) or the path of a model.pt / best_model.pt"


def load_init(path):
    """The weights file a fine-tune starts from (model.pt, best_model.pt; train_state.pt holds the same keys)."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"error: --init_from={path}: no such file; {INIT_HINT}")
    if p.is_dir():
        raise SystemExit(f"error: --init_from={path} is a directory; {INIT_HINT} (such as {p / ckpt_io.MODEL_FILE})")
    try:
        return ckpt_io.load_model_checkpoint(p)
    except ckpt_io.CheckpointError as e:
        raise SystemExit(f"error: --init_from={path} is not a solGPT weights file: {e}; {INIT_HINT}") from None


def resume_model_args(cfg, state, explicit, action="resume"):
    """The checkpoint's model shape, with the non-shape keys (dropout) the user set applied. A shape key the user
    set to another value is refused: the trained weights cannot take it. cfg is updated to what this run uses, so
    the config saved in the next checkpoint is the truth. action names the run in messages (resume, or
    'initialise from PATH' for a fine-tune, which reads its shape from its model.pt the same way)."""
    model_args = dict(state["model_args"])
    for key, saved in model_args.items():
        if key not in cfg:
            continue  # vocab_size: from the data
        if key in NON_SHAPE_KEYS:
            if key in explicit:
                model_args[key] = cfg[key]
        elif key in explicit and cfg[key] != saved:
            raise SystemExit(f"error: cannot {action} with --{key}={cfg[key]}: the checkpoint's model has "
                             f"{key}={saved!r}, and a trained model's shape cannot change; drop --{key}, or train "
                             f"from scratch in another --out_dir")
        cfg[key] = model_args[key]
    return model_args


def check_resume_tokenizer(cfg, state, meta, action="resume"):
    if state.get("tokenizer_hash") != meta["tokenizer_hash"]:
        raise SystemExit(f"error: cannot {action}: the checkpoint was trained with tokenizer {state.get('tokenizer')} "
                         f"but --dataset={cfg['dataset']} uses {meta['tokenizer']} (hashes differ)")


def load_data(cfg, dist_info, device):
    try:
        if cfg["task"] == "classify":
            return vuln.make_sampler(cfg, dist_info, device)
        return BatchSampler(cfg["dataset"], cfg["block_size"], cfg["batch_size"], device, cfg["seed"],
                            dist_info.rank, dist_info.world_size, cfg["data_root"],
                            fim=dict(rate=cfg["fim_rate"], spm_rate=cfg["fim_spm_rate"],
                                     syntax_rate=cfg["fim_syntax_rate"]))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None


def build_model(model_args, weights, device, seed, action="resume"):
    """The model, with the saved weights when there are any. A classification head that the weights lack (a
    classifier initialised from a language model's model.pt) keeps its fresh initialisation; nothing else may be
    missing."""
    torch.manual_seed(seed)  # same initial weights on every rank (and DDP broadcasts rank 0's anyway)
    model = GPT(GPTConfig.from_dict(model_args))
    if weights is not None:
        try:
            missing, unexpected = model.load_state_dict(ckpt_io.strip_compile_prefix(weights["model"]), strict=False)
            if unexpected or any(not k.startswith("cls_head.") for k in missing):
                raise RuntimeError(f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        except RuntimeError as e:
            raise SystemExit(f"error: cannot {action}: the weights do not match their model_args "
                             f"({(str(e).splitlines() or [''])[0][:200]})") from None
    return model.to(device)


def weights_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class StopRequest:
    """While active, SIGINT/SIGTERM only set a flag: the loop saves and exits between steps, never in the middle of
    a write. The first signal restores the default handlers, so a second Ctrl-C kills a run that hangs (the
    checkpoints are written atomically, so even that loses nothing already saved)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.signum = 0
        self.previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handler(self, signum, frame):
        self.signum = signum
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)


def checks_every_step(device, dist_info):
    """Whether the non-finite guard reads the loss on the host every step (see Trainer)."""
    return device.type != "cuda" or dist_info.enabled


class Trainer:
    """One training run: the model, optimizer and data, the loop, evaluation, logging and checkpoints.
    A fine-tuning script can reuse it with its own data or model (build one, then call run())."""

    def __init__(self, cfg, dist_info, device, dtype, sampler, model, model_args, token_bytes, task=None):
        self.cfg, self.dist, self.device, self.dtype, self.sampler = cfg, dist_info, device, dtype, sampler
        self.task = task  # None: language modelling; vuln.ClassifyTask: its own evaluation and checkpoint entries
        self.meta = sampler.meta
        self.model, self.model_args = model, model_args
        self.token_bytes = token_bytes.to(device)
        self.ctx = autocast(device, dtype)
        self.tokens_per_micro = cfg["batch_size"] * cfg["block_size"]
        self.tokens_per_full_iter = cfg["gradient_accumulation_steps"] * self.tokens_per_micro
        self.max_tokens = cfg["max_iters"] * self.tokens_per_full_iter
        self.budget = None
        if cfg["budget_s"] > 0:
            self.budget = TimeBudget(cfg["budget_s"], cfg["warmup_iters"], self.tokens_per_full_iter)
            self.max_tokens = math.inf  # until the budget says how many iterations fit
        torch.manual_seed(cfg["seed"] + dist_info.rank)  # dropout masks differ between ranks
        self.optimizer = build_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.eval_model = torch.compile(model) if cfg["compile"] else model
        self.run_model = self.eval_model
        if dist_info.enabled:
            self.run_model = DDP(self.eval_model, device_ids=[device.index] if device.type == "cuda" else None)
        self.peak_flops = cfg["peak_flops"] or device_peak_flops(device, dtype)
        self.out_dir = Path(cfg["out_dir"])
        self.iter_num, self.resumed = 0, False
        self.evaluated = False  # whether iteration iter_num has been evaluated (stored in train_state.pt)
        self.final_evaluated = False  # whether that evaluation was the final one (whole val split)
        self.best_val_loss = float("inf")
        self.batches = Prefetcher(sampler)
        # Reading a loss or norm on the host waits for the GPU and leaves it idle until the next step is queued.
        # On CPU that costs nothing, and DDP ranks must agree every step (stop requests); a single GPU instead
        # keeps the iteration of the first non-finite loss / gradient norm on the device and looks at log_interval
        # and before every evaluation or checkpoint (which also refuses non-finite weights).
        self.check_every_step = checks_every_step(device, dist_info)
        self.first_bad = torch.full((2,), -1, dtype=torch.long, device=device)
        self.notes = []  # lines for the log, from before it is open
        self.log = None
        self.recent_dts = collections.deque(maxlen=50)  # seconds per full iteration, for the ETA
        self.health = Health(model, cfg["grad_clip"], cfg["health_interval"] if dist_info.master else 0)  # rank 0 logs

    def per_iter_shown(self):
        if self.task is None:
            return f"{self.tokens_per_full_iter:,} tokens/iter"
        return f"{self.tokens_per_full_iter // self.cfg['block_size']} files/iter"

    def tokens_seen(self):
        return self.batches.consumed() * self.tokens_per_micro

    def finished(self):
        return self.tokens_seen() >= self.max_tokens

    def set_run_length(self, iters):
        """max_iters (and the cosine's end, lr_decay_iters) from a --budget_s decision."""
        self.cfg = {**self.cfg, "max_iters": iters, "lr_decay_iters": iters}
        self.max_tokens = iters * self.tokens_per_full_iter

    def restore_budget(self, saved):
        """A resumed --budget_s run keeps its decision (or goes on measuring where it stopped)."""
        if saved:
            self.budget.load_state_dict(saved)
            if self.budget.iters is not None:
                self.set_run_length(self.budget.iters)
                if saved["budget_s"] != self.budget.budget_s:
                    self.notes.append(f"keeps the {self.budget.iters} iterations its budget of {saved['budget_s']:g} s "
                                      f"decided; --budget_s={self.budget.budget_s:g} applies to new runs")
        elif self.tokens_seen() >= self.cfg["warmup_iters"] * self.tokens_per_full_iter:
            raise SystemExit(f"error: cannot resume with --budget_s: the checkpoint is past its warmup and was "
                             f"trained for a fixed max_iters; resume with --max_iters=N")

    def restore(self, state):
        try:
            self.sampler.load_state_dict(state["sampler"])
        except DataError as e:
            raise SystemExit(f"error: cannot resume: {e}") from None
        if self.budget:
            self.restore_budget(state.get("budget"))
        saved = state["config"].get("optimizer", "adamw")
        if saved != self.cfg["optimizer"]:
            raise SystemExit(f"error: cannot resume with --optimizer={self.cfg['optimizer']}: the checkpoint was "
                             f"trained with {saved}; resume with --optimizer={saved}")
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        elif self.scaler.is_enabled() or state["scaler"]:  # the dtype changed (e.g. an fp32 run resumed in fp16)
            self.notes.append(f"--dtype differs from the checkpoint's: the float16 loss scale "
                              f"{'starts fresh' if self.scaler.is_enabled() else 'is not used'}")
        self.iter_num = state["iter_num"]
        if self.task is not None:
            self.task.restore(state)
        self.best_val_loss = state["best_val_loss"]
        self.evaluated = bool(state["evaluated"])
        self.final_evaluated = bool(state.get("final_evaluated", False))
        self.resumed = True
        if self.dist.master:
            set_rng_state(state["rng"], self.device)
            # a run stopped at its end but not finally evaluated gets the final evaluation now, which replaces
            # the record of any periodic one at that iteration
            keep = self.evaluated and (self.final_evaluated or not self.finished())
            trim_metrics(self.out_dir / "metrics.jsonl", self.iter_num, keep_eval_at_iter=keep)
        else:  # only rank 0's RNG is saved; the others get a fresh but reproducible stream
            torch.manual_seed(self.cfg["seed"] + self.dist.rank + 1000 * self.iter_num)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def save(self, val_loss=None, best=False):
        """train_state.pt (all that resume reads, one atomic file), then model.pt (and best_model.pt).
        Returns False, writing nothing, when the weights are not finite: a checkpoint must never be poisoned.
        Every rank calls it (the weights are the same on all, so all take the same decision); only the master writes."""
        if not weights_finite(self.model):
            self.log.error(f"error: the weights are not finite at iter {self.iter_num}; not saved, so "
                           f"{self.out_dir} keeps the last good checkpoint")
            return False
        if not self.dist.master:
            return True
        weights = ckpt_io.model_checkpoint(self.model, self.model_args, self.meta["tokenizer"],
                                           self.meta["tokenizer_hash"], self.iter_num, val_loss)
        if self.task is not None:
            weights.update(self.task.checkpoint_extra())
        state = {
            **{k: v for k, v in weights.items() if k != "val_loss"},
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device), "sampler": self.batches.state_dict(),
            "best_val_loss": self.best_val_loss, "evaluated": self.evaluated, "final_evaluated": self.final_evaluated,
            "budget": self.budget.state_dict() if self.budget else None, "config": dict(self.cfg),
        }
        ckpt_io.atomic_torch_save(state, self.out_dir / ckpt_io.STATE_FILE)
        ckpt_io.atomic_torch_save(weights, self.out_dir / ckpt_io.MODEL_FILE)
        if best:
            ckpt_io.atomic_torch_save(weights, self.out_dir / ckpt_io.BEST_FILE)
        return True

    def lm_evaluation(self, final):
        """A language model's evaluation record and log line (see evaluate_and_save)."""
        losses = sampled_losses(self.eval_model, self.sampler, self.cfg["eval_iters"], self.ctx, self.token_bytes,
                                self.dist)
        train, val = losses["train"], losses["val"]
        it = self.iter_num
        record = {"iter": it, "train_loss": train.loss, "val_loss": val.loss, "val_bpb": val.bpb,
                  "tokens": self.tokens_seen()}
        line = f"eval {it}: train loss {train.loss:.4f}, val loss {val.loss:.4f}, val bpb {val.bpb:.4f}"
        if final:
            whole = whole_val_loss(self.eval_model, self.sampler, self.ctx, self.token_bytes, self.device, self.dist)
            record.update(val_loss=whole.loss, val_bpb=whole.bpb, sampled_val_loss=val.loss, sampled_val_bpb=val.bpb,
                          val_tokens=whole.tokens, val_bytes=whole.bytes, final=True)
            line = (f"final eval {it}: whole val split ({whole.tokens:,} tokens, {whole.bytes:,} bytes): val loss "
                    f"{whole.loss:.4f}, val bpb {whole.bpb:.4f}; sampled: train loss {train.loss:.4f}, "
                    f"val loss {val.loss:.4f}, val bpb {val.bpb:.4f}")
        return record, line

    def evaluate_and_save(self, final=False):
        """Periodic evaluation (a few fixed batches; exact bits per byte of their targets), or with final=True also
        the whole val split, whose loss and bpb the record then reports (the sampled ones beside them); a
        classifier's task evaluates its own way (vuln.py). Returns False when the losses are not finite (nothing
        saved: the run must stop)."""
        if self.task is not None:
            record, line = self.task.evaluate(self.eval_model, self.ctx, self.iter_num, final)
            record["tokens"] = self.tokens_seen()
        else:
            record, line = self.lm_evaluation(final)
        it = self.iter_num
        self.evaluated, self.final_evaluated = True, final
        self.log.info(line)
        self.log.metrics(record)
        if not all(math.isfinite(record[k]) for k in ("train_loss", "val_loss")):
            self.log.error(f"error: evaluation loss is not finite at iter {it}; stopped without saving, so "
                           f"{self.out_dir} keeps the last good checkpoint")
            return False
        val_loss = record.get("sampled_val_loss", record["val_loss"])  # the same measure at every evaluation
        improved = it > 0 and val_loss < self.best_val_loss  # iter 0 is the untrained model
        if improved:
            self.best_val_loss = val_loss
        if it > 0 and (final or improved or self.cfg["always_save_checkpoint"]):
            if not self.save(record["val_loss"], best=improved):
                return False
            self.log.info(f"saved checkpoint to {self.out_dir} (iter {it})")
        return True

    # -- the loop ------------------------------------------------------------------------------------------------

    def step(self, lr, n_micro, stop):
        """One optimizer step over n_micro micro-batches of this rank.
        Returns (loss, grad norm, stop requested on any rank, ok); loss and norm are device tensors unless checked
        every step. ok is False, and the optimizer never touches the weights, for a non-finite loss, or a non-finite
        gradient norm without a GradScaler (with fp16's scaler an overflow is routine: the scaler skips the step)."""
        set_lr(self.optimizer, lr)
        loss = accumulate_gradients(self.run_model, self.batches, self.ctx, self.scaler, n_micro)
        grad_norm = clip_and_norm(self.run_model, self.optimizer, self.scaler, self.cfg["grad_clip"])
        self.health.observe(grad_norm)  # a device tensor on one GPU: counted there, read at log_interval
        stop_requested, ok = stop.signum != 0, True
        if self.check_every_step:
            loss_sum, stop_votes, bad_norms = agree(
                [loss.item(), float(stop_requested), float(not torch.isfinite(grad_norm))], self.dist)
            loss, grad_norm, stop_requested = loss_sum / self.dist.world_size, float(grad_norm), stop_votes > 0
            ok = math.isfinite(loss) and (self.scaler.is_enabled() or bad_norms == 0)
        else:
            bad = torch.stack([~torch.isfinite(loss), ~torch.isfinite(grad_norm) & (not self.scaler.is_enabled())])
            self.first_bad = torch.where(bad & (self.first_bad < 0), self.iter_num, self.first_bad)
        if ok:
            self.health.before_update(self.iter_num, grad_norm)
            self.scaler.step(self.optimizer)
            self.health.after_update()
            self.scaler.update()
            self.iter_num += 1
            self.evaluated = self.final_evaluated = False
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, stop_requested, ok

    def finite_so_far(self):
        """Deferred guard (single GPU): False, after saying where, once a loss or gradient norm was non-finite."""
        if self.check_every_step:
            return True
        bad_loss, bad_norm = self.first_bad.tolist()
        if bad_loss < 0 and bad_norm < 0:
            return True
        what, it = ("loss", bad_loss) if bad_norm < 0 or 0 <= bad_loss <= bad_norm else ("gradient norm", bad_norm)
        self.log.error(f"error: {what} is not finite at iter {it}; stopped without saving, so {self.out_dir} "
                       f"keeps the last good checkpoint (try a lower --learning_rate, or check the data)")
        return False

    def start_timing(self):
        self.timing = (time.perf_counter(), self.iter_num, self.tokens_seen())

    def log_step(self, it, loss, lr, grad_norm, n_micro):
        """One log line and record; speed is averaged over the iterations since the last one (on a GPU the host runs
        ahead of the device between the syncs of these lines, so a single step's wall time would mean nothing)."""
        loss, grad_norm = float(loss), float(grad_norm)
        t0, it0, tokens0 = self.timing
        dt = (time.perf_counter() - t0) / max(1, self.iter_num - it0)
        tokens_per_iter = (self.tokens_seen() - tokens0) / max(1, self.iter_num - it0)
        mfu = self.model.estimate_mfu(tokens_per_iter, dt, self.peak_flops * self.dist.world_size)
        clip = self.health.log_fields()
        done = self.tokens_seen() // self.tokens_per_full_iter  # full iterations' worth (smaller steps in a ramp)
        self.recent_dts.append(dt * self.tokens_per_full_iter / tokens_per_iter)
        total = self.cfg["max_iters"] if self.max_tokens < math.inf else "?"  # "?": a budget not yet decided
        eta = tracking.format_duration(tracking.eta_seconds(total - done, self.recent_dts)) if total != "?" else "?"
        if self.task is None:
            speed = {"tok_per_s": tokens_per_iter / dt, "mfu": mfu}
            shown = f"{speed['tok_per_s']:,.0f} tok/s, mfu {mfu * 100:.2f}%"
        else:  # a classifier's batch is files of any length: block_size-token counts (and an MFU) would be made up
            speed = {"files_per_s": tokens_per_iter / self.cfg["block_size"] / dt}
            shown = f"{speed['files_per_s']:.2f} files/s"
        self.log.info(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, grad norm {grad_norm:.3f} "
                      f"({clip['clip_frac']:.0%} clipped), {dt * 1000:.1f}ms, {shown}, {done}/{total} eta {eta}")
        record = {"iter": it, "loss": loss, "lr": lr, "grad_norm": grad_norm, **clip, "tokens": self.tokens_seen(),
                  "micro_batches": n_micro, "dt_ms": dt * 1000, **speed}
        if self.device.type == "cuda":
            record["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.log.metrics(record)
        self.start_timing()

    def check_budget(self, seconds):
        """--budget_s, after a step: feed its clock (this session's seconds of training steps); at the end of the
        warmup it fixes the run length, the same on every rank (their estimates averaged)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the host runs ahead of the GPU: time what it has done
        iters = self.budget.observe(self.tokens_seen(), seconds)
        if iters is None:
            return
        self.budget.iters = int(agree([iters], self.dist)[0]) // self.dist.world_size
        self.set_run_length(self.budget.iters)
        spent = tracking.format_duration(self.budget.spent_s + seconds)
        self.log.info(f"budget {self.budget.budget_s:g} s: {self.budget.iters} iterations fit "
                      f"({self.budget.tokens_per_s:,.0f} tok/s over the warmup's second half, after {spent} of "
                      f"training); max_iters = lr_decay_iters = {self.budget.iters}")

    def run(self):
        """Train to max_iters; returns the process exit code (0 done, 1 non-finite loss, 128+signal stopped)."""
        if self.dist.master:
            swept = sweep_stale_temp_files(self.out_dir)
            if swept:
                self.notes.append(f"removed {len(swept)} temp file(s) of interrupted writes: {', '.join(swept)}")
            moved = None if self.resumed else set_aside_earlier_run(self.out_dir)
            if moved:
                self.notes.append(moved)
        # opened after restore(), whose trimming replaces the file
        self.log = RunLog(self.out_dir, self.dist.master, tracking.start(self.cfg, self.dist.master))
        try:
            for line in self.notes:
                self.log.info(line)
            with StopRequest() as stop:
                return self._loop(self.cfg, stop)
        finally:
            self.log.close()

    def _loop(self, cfg, stop):
        self.log.info(f"device {self.device}, dtype {str(self.dtype).replace('torch.', '')}, "
                      f"{self.dist.world_size} process(es), "
                      f"{self.model.get_num_params() / 1e6:.2f}M parameters, {self.per_iter_shown()}, "
                      f"dataset {cfg['dataset']} ({self.meta['tokenizer']} tokenizer, vocab {self.meta['vocab_size']})")
        if self.budget and self.budget.iters is None:
            self.log.info(f"budget {self.budget.budget_s:g} s: the run length is decided at the end of the warmup "
                          f"(warmup_iters={cfg['warmup_iters']}), from the speed measured there")
        if self.resumed:
            self.log.info(f"resuming from {self.out_dir} at iter {self.iter_num}")
            if self.finished() and self.final_evaluated:
                self.log.info(f"already at iter {self.iter_num}, past max_iters {cfg['max_iters']}, and evaluated: "
                              f"nothing to do")
                return 0
        ws = self.dist.world_size
        self.start_timing()
        loop_start, eval_s = time.perf_counter(), 0.0  # the budget's clock counts training steps, not evaluations
        if self.budget and self.budget.iters is None:
            self.budget.begin(self.tokens_seen())
        while not self.finished():
            it = self.iter_num
            if it % cfg["eval_interval"] == 0 and not self.evaluated:  # (a resumed checkpoint may hold it already)
                t0 = time.perf_counter()
                if not (self.finite_so_far() and self.evaluate_and_save()):
                    return 1
                eval_s += time.perf_counter() - t0
                self.start_timing()
            tokens = self.tokens_seen()
            n_micro = micro_batches(tokens, cfg, ws) // ws
            lr = get_lr(tokens / self.tokens_per_full_iter, cfg)
            loss, grad_norm, stop_requested, ok = self.step(lr, n_micro, stop)
            if not ok:
                what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
                self.log.error(f"error: {what} at iter {it}; stopped without saving, so {self.out_dir} "
                               f"keeps the last good checkpoint (try a lower --learning_rate, or check the data)")
                return 1
            if self.budget and self.budget.iters is None:
                self.check_budget(time.perf_counter() - loop_start - eval_s)
                cfg = self.cfg  # the decided max_iters and lr_decay_iters
            if it % cfg["log_interval"] == 0 or self.finished() or stop_requested:
                if not self.finite_so_far():
                    return 1
                self.log_step(it, loss, lr, grad_norm, n_micro * ws)
            if (health := self.health.pop_record()) is not None:
                self.log.metrics(health)
            if stop_requested:
                signum = stop.signum or signal.SIGTERM  # another rank was signalled
                if not self.save():
                    return 1
                self.log.info(f"stopped by {signal.Signals(signum).name} at iter {self.iter_num}: checkpoint saved "
                              f"to {self.out_dir}; continue with --init_from=resume")
                return 128 + signum
        if not self.final_evaluated:
            if not (self.finite_so_far() and self.evaluate_and_save(final=True)):
                return 1
        if self.dist.enabled:
            if not ranks_agree(self.model):
                self.log.error(f"error: the {self.dist.world_size} ranks ended with different weights")
                return 1
            self.log.info(f"weights identical on all {self.dist.world_size} ranks")
        return 0


# ----------------------------------------------------------------------------------------------------------------
# main


def main(argv=None):
    cfg = configure(DEFAULTS, argv, "train.py", __doc__)
    given = command_line_keys(argv)
    if cfg["budget_s"] and "max_iters" in given:
        if "budget_s" in given:
            raise SystemExit("error: --budget_s and --max_iters both given: the budget decides max_iters; pass one")
        # a run length on the command line wins over a config file's time budget (and the cosine ends with it)
        cfg = {**cfg, "budget_s": 0.0, "lr_decay_iters": cfg["lr_decay_iters"] if "lr_decay_iters" in given
               else cfg["max_iters"]}
    validate_config(cfg)
    explicit = explicit_keys(cfg, argv)
    dist_info = Dist()
    device = resolve_device(cfg["device"], dist_info)
    if dist_info.enabled:
        if cfg["gradient_accumulation_steps"] % dist_info.world_size:
            raise SystemExit(f"error: --gradient_accumulation_steps ({cfg['gradient_accumulation_steps']}) must be a "
                             f"multiple of the number of processes ({dist_info.world_size})")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        code = train(cfg, dist_info, device, explicit)
        if dist_info.enabled:
            dist.barrier()  # no rank tears down its process group while another still uses it
        return code
    finally:
        if dist_info.enabled:
            dist.destroy_process_group()


def train(cfg, dist_info, device, explicit=()):
    dtype = resolve_dtype(cfg["dtype"], device, training=True)
    no_compile = cfg["compile"] and compile_unavailable(device)
    if no_compile:
        cfg = {**cfg, "compile": False}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores: much faster, loss unchanged
        torch.backends.cudnn.allow_tf32 = True
    state = init = None  # resume: train_state.pt; init: a fine-tune's model.pt (weights only, a new run)
    action = "resume"
    if cfg["init_from"] == "resume":
        state = load_resume(cfg["out_dir"])
    elif cfg["init_from"] != "scratch":
        init, action = load_init(cfg["init_from"]), f"initialise from {cfg['init_from']}"
    saved = state if state is not None else init
    if saved is not None:
        model_args = resume_model_args(cfg, saved, explicit, action)  # before the data: block_size may come from it
        if init is not None:  # a fine-tune: the task decides the head (a language model's model.pt has none)
            model_args = {**{k: v for k, v in model_args.items() if k not in CLASSIFIER_KEYS},
                          **classifier_args(cfg)}
    sampler = load_data(cfg, dist_info, device)
    if saved is not None:
        check_resume_tokenizer(cfg, saved, sampler.meta, action)
    else:
        model_args = model_args_from(cfg, sampler.meta["vocab_size"])
    try:
        token_bytes = load_token_bytes(sampler.meta, model_args["vocab_size"])
    except EvalError as e:
        raise SystemExit(f"error: {e}") from None
    model = build_model(model_args, saved, device, cfg["seed"], action)
    task = None
    if cfg["task"] == "classify":
        task = vuln.ClassifyTask(sampler, cfg)
        try:
            task.prepare_model(model)
        except DataError as e:
            raise SystemExit(f"error: {e}") from None
    trainer = Trainer(cfg, dist_info, device, dtype, sampler, model, model_args, token_bytes, task)
    if state is not None:
        trainer.restore(state)
    if no_compile:
        trainer.notes.append(f"{no_compile}: running without it")
    if init is not None:  # cfg["init_from"], in every checkpoint's config, records the source too
        trainer.notes.append(f"initialised from {cfg['init_from']} (iter {init.get('iter_num', '?')})")
    return trainer.run()


if __name__ == "__main__":
    sys.exit(main())
