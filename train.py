"""
Train solGPT. One process on CPU, one GPU or Apple Silicon:

    python train.py config/train_cpu.py --max_iters=2000 --out_dir=out-cpu

Several GPUs (or CPU processes) with DistributedDataParallel:

    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m.py

Resume an interrupted run (same batches and random numbers as if it had never stopped):

    python train.py config/train_cpu.py --out_dir=out-cpu --init_from=resume

gradient_accumulation_steps is the global number of micro-batches per optimizer step (as in nanoGPT): under DDP each
rank does gradient_accumulation_steps / world_size of them, so tokens per iteration do not depend on the GPU count.
Writes out_dir/model.pt (weights), best_model.pt (best val loss), train_state.pt (weights + optimizer etc.: all that
resuming reads), log.txt and metrics.jsonl. A scratch run into an out_dir that holds an earlier run removes that
run's metrics.jsonl, train_state.pt, model.pt and best_model.pt first. Ctrl-C (or SIGTERM) saves a checkpoint and exits.
"""

import json
import math
import os
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
from configurator import configure  # noqa: E402
from dataloader import BatchSampler, DataError  # noqa: E402
from model import GPT, GPTConfig, POS_ENCODINGS, device_peak_flops  # noqa: E402

DEFAULTS = dict(
    # I/O
    out_dir="out",
    eval_interval=250,  # evaluate (and checkpoint) every this many iterations
    eval_iters=50,  # batches per split per evaluation
    log_interval=10,
    always_save_checkpoint=True,  # write model.pt at every evaluation; False: only when val loss improves
    init_from="scratch",  # 'scratch' or 'resume' (from out_dir)
    # data
    dataset="solidity-packages",  # data/<name>/ prepared by data/<name>/prepare.py; or a mixture 'a:0.7,b:0.3'
    data_root="data",
    gradient_accumulation_steps=1,  # global micro-batches per optimizer step (divided among DDP ranks)
    batch_size=12,  # micro-batch size per rank
    block_size=256,
    fim_rate=0.0,  # fill-in-the-middle (fim.py): share of training documents moved to FIM order; 0 = off
    fim_spm_rate=0.5,  # share of FIM documents in SPM order (the rest PSM)
    fim_syntax_rate=0.5,  # share of FIM split points at a whole function body or statement (tree-sitter)
    # model
    n_layer=6,
    n_head=6,
    n_embd=384,
    dropout=0.0,
    bias=False,
    pos_encoding="learned",
    # AdamW
    learning_rate=6e-4,
    max_iters=5000,
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
    dtype="auto",  # auto = bfloat16 where supported, float16 (+ GradScaler) on older CUDA, float32 on CPU/MPS
    compile=False,  # torch.compile the model
    seed=1337,
    peak_flops=0.0,  # device peak FLOP/s for MFU; 0 = look it up (model.PEAK_FLOPS)
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NAN_TEST_ENV = "SOLGPT_TEST_NAN_ITER"  # tests only: make the loss of this iteration NaN
NAN_GRAD_TEST_ENV = "SOLGPT_TEST_NAN_GRAD_ITER"  # tests only: make a gradient of this iteration NaN (loss finite)


# ----------------------------------------------------------------------------------------------------------------
# setup


def validate_config(cfg):
    def need(ok, msg):
        if not ok:
            raise SystemExit(f"error: {msg}")

    for key in ("batch_size", "block_size", "n_layer", "n_head", "n_embd", "eval_interval", "eval_iters",
                "log_interval", "gradient_accumulation_steps"):
        need(cfg[key] > 0, f"--{key} must be > 0, got {cfg[key]}")
    need(cfg["max_iters"] >= 0, f"--max_iters must be >= 0, got {cfg['max_iters']}")
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
    need(cfg["init_from"] in ("scratch", "resume"), f"--init_from must be 'scratch' or 'resume', got {cfg['init_from']!r}")
    need(cfg["dtype"] in ("auto", *DTYPES), f"--dtype must be one of auto, {', '.join(DTYPES)}, got {cfg['dtype']!r}")
    need(cfg["pos_encoding"] in POS_ENCODINGS,
         f"--pos_encoding must be one of {', '.join(POS_ENCODINGS)}, got {cfg['pos_encoding']!r}")


class Dist:
    """Where this process stands in a torchrun job (a single process is rank 0 of 1)."""

    def __init__(self):
        self.enabled = int(os.environ.get("RANK", -1)) != -1
        self.rank = int(os.environ.get("RANK", 0))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.master = self.rank == 0


def resolve_device(pref, dist_info):
    if pref == "auto":
        if torch.cuda.is_available():
            pref = "cuda"
        elif torch.backends.mps.is_available():
            pref = "mps"
        else:
            pref = "cpu"
    try:
        device = torch.device(pref)
    except RuntimeError:
        raise SystemExit(f"error: --device={pref} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device=cuda but CUDA is not available here; use --device=cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("error: --device=mps but MPS is not available here; use --device=cpu or auto")
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)  # one GPU per rank
    return device


def resolve_dtype(pref, device):
    if pref != "auto":
        return DTYPES[pref]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU autocast is slower than fp32 for training; MPS bf16 support varies by OS version


def autocast(device, dtype):
    return nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)


def get_lr(it, cfg):
    """Linear warmup, then cosine decay from learning_rate to min_lr at lr_decay_iters, then min_lr."""
    if not cfg["decay_lr"]:
        return cfg["learning_rate"]
    if it < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (it + 1) / (cfg["warmup_iters"] + 1)
    if it >= cfg["lr_decay_iters"]:
        return cfg["min_lr"]
    ratio = (it - cfg["warmup_iters"]) / max(1, cfg["lr_decay_iters"] - cfg["warmup_iters"])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg["min_lr"] + coeff * (cfg["learning_rate"] - cfg["min_lr"])


def model_args_from(cfg, vocab_size):
    padded = (vocab_size + 63) // 64 * 64  # a multiple of 64 keeps the lm_head matmul on fast kernels
    return dict(n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"], block_size=cfg["block_size"],
                bias=cfg["bias"], vocab_size=padded, dropout=cfg["dropout"], pos_encoding=cfg["pos_encoding"])


# ----------------------------------------------------------------------------------------------------------------
# one optimizer step


def accumulate_gradients(model, batches, ctx, scaler, n_micro, nan_at_micro=None):
    """Forward/backward over n_micro (x, y) micro-batches; .grad ends up holding the gradient of their mean loss.
    Each loss is divided by n_micro, so k micro-batches give the gradient of one k-times larger batch.
    Under DDP the gradient all-reduce runs only on the last micro-batch (no_sync before it).
    Returns the mean loss (detached tensor)."""
    total = 0.0
    for micro in range(n_micro):
        x, y = next(batches)
        last = micro == n_micro - 1
        sync = nullcontext() if (last or not isinstance(model, DDP)) else model.no_sync()
        with sync:
            with ctx:
                _, loss = model(x, y)
            if nan_at_micro == micro:
                loss = loss * float("nan")
            loss = loss / n_micro
            scaler.scale(loss).backward()
        total = total + loss.detach().float()
    return total


def clip_and_norm(model, optimizer, scaler, grad_clip):
    """Unscale (fp16), clip, and return the global gradient norm before clipping."""
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


@torch.no_grad()
def evaluate(model, sampler, eval_iters, ctx, dist_info):
    """Mean loss per split over eval_iters fixed batches per rank, averaged over ranks."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = sampler.get_batch(split, index=k)
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss.item()
        out[split] = agree([losses.mean().item()], dist_info)[0] / dist_info.world_size
    model.train()
    return out


# ----------------------------------------------------------------------------------------------------------------
# logging and checkpoints


class RunLog:
    """Console + out_dir/log.txt lines, and out_dir/metrics.jsonl records; only the master rank writes."""

    def __init__(self, out_dir, enabled):
        self.enabled = enabled
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

    def close(self):
        if self.enabled:
            self.log.close()
            self.metrics_file.close()


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


def resume_model_args(cfg, weights, meta):
    """The checkpoint's model shape wins over the command line's (as in nanoGPT); the data must match it."""
    if weights.get("tokenizer_hash") != meta["tokenizer_hash"]:
        raise SystemExit(f"error: cannot resume: the checkpoint was trained with tokenizer {weights.get('tokenizer')} "
                         f"but --dataset={cfg['dataset']} uses {meta['tokenizer']} (hashes differ)")
    model_args = dict(weights["model_args"])
    if model_args["block_size"] != cfg["block_size"]:
        raise SystemExit(f"error: cannot resume with --block_size={cfg['block_size']}: the checkpoint has "
                         f"block_size {model_args['block_size']}")
    return model_args


def load_data(cfg, dist_info, device):
    try:
        return BatchSampler(cfg["dataset"], cfg["block_size"], cfg["batch_size"], device, cfg["seed"],
                            dist_info.rank, dist_info.world_size, cfg["data_root"],
                            fim=dict(rate=cfg["fim_rate"], spm_rate=cfg["fim_spm_rate"],
                                     syntax_rate=cfg["fim_syntax_rate"]))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None


def build_model(model_args, weights, device, seed):
    torch.manual_seed(seed)  # same initial weights on every rank (and DDP broadcasts rank 0's anyway)
    model = GPT(GPTConfig.from_dict(model_args))
    if weights is not None:
        try:
            model.load_state_dict(ckpt_io.strip_compile_prefix(weights["model"]))
        except RuntimeError as e:
            raise SystemExit(f"error: cannot resume: the weights do not match their model_args "
                             f"({(str(e).splitlines() or [''])[0][:200]})") from None
    return model.to(device)


def weights_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class StopRequest:
    """SIGINT/SIGTERM only set a flag; the loop saves and exits between steps, never in the middle of a write."""

    def __init__(self):
        self.signum = 0
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.signum = signum


class Trainer:
    """One training run: the model, optimizer and data, the loop, evaluation, logging and checkpoints.
    A fine-tuning script can reuse it with its own data or model (build one, then call run())."""

    def __init__(self, cfg, dist_info, device, dtype, sampler, model, model_args):
        self.cfg, self.dist, self.device, self.dtype, self.sampler = cfg, dist_info, device, dtype, sampler
        self.meta = sampler.meta
        self.model, self.model_args = model, model_args
        self.ctx = autocast(device, dtype)
        self.n_micro = cfg["gradient_accumulation_steps"] // dist_info.world_size
        self.tokens_per_iter = self.n_micro * dist_info.world_size * cfg["batch_size"] * cfg["block_size"]
        torch.manual_seed(cfg["seed"] + dist_info.rank)  # dropout masks differ between ranks
        self.optimizer = model.configure_optimizer(cfg["weight_decay"], cfg["learning_rate"],
                                                   (cfg["beta1"], cfg["beta2"]), device.type)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.eval_model = torch.compile(model) if cfg["compile"] else model
        self.run_model = self.eval_model
        if dist_info.enabled:
            self.run_model = DDP(self.eval_model, device_ids=[device.index] if device.type == "cuda" else None)
        self.peak_flops = cfg["peak_flops"] or device_peak_flops(device)
        self.out_dir = Path(cfg["out_dir"])
        self.iter_num, self.start_iter, self.resumed = 0, 0, False
        self.evaluated = False  # whether iteration iter_num has been evaluated (stored in train_state.pt)
        self.best_val_loss = float("inf")
        self.batches = iter(lambda: sampler.get_batch("train"), None)
        self.log = None

    def restore(self, state):
        try:
            self.sampler.load_state_dict(state["sampler"])
        except DataError as e:
            raise SystemExit(f"error: cannot resume: {e}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iter_num = self.start_iter = state["iter_num"]
        self.best_val_loss = state["best_val_loss"]
        self.evaluated = bool(state["evaluated"])
        self.resumed = True
        if self.dist.master:
            set_rng_state(state["rng"], self.device)
            trim_metrics(self.out_dir / "metrics.jsonl", self.iter_num, keep_eval_at_iter=self.evaluated)
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
        state = {
            **{k: v for k, v in weights.items() if k != "val_loss"},
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.device), "sampler": self.sampler.state_dict(),
            "best_val_loss": self.best_val_loss, "evaluated": self.evaluated, "config": dict(self.cfg),
        }
        ckpt_io.atomic_torch_save(state, self.out_dir / ckpt_io.STATE_FILE)
        ckpt_io.atomic_torch_save(weights, self.out_dir / ckpt_io.MODEL_FILE)
        if best:
            ckpt_io.atomic_torch_save(weights, self.out_dir / ckpt_io.BEST_FILE)
        return True

    def evaluate_and_save(self, final=False):
        """Returns False when the losses are not finite (nothing saved: the run must stop)."""
        losses = evaluate(self.eval_model, self.sampler, self.cfg["eval_iters"], self.ctx, self.dist)
        bpb = losses["val"] / math.log(2) / self.sampler.bytes_per_token("val")
        it = self.iter_num
        self.evaluated = True
        self.log.info(f"eval {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, val bpb {bpb:.4f}")
        self.log.metrics({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"], "val_bpb": bpb,
                          "tokens": it * self.tokens_per_iter})
        if not (math.isfinite(losses["val"]) and math.isfinite(losses["train"])):
            self.log.error(f"error: evaluation loss is not finite at iter {it}; stopped without saving, so "
                           f"{self.out_dir} keeps the last good checkpoint")
            return False
        improved = it > 0 and losses["val"] < self.best_val_loss  # iter 0 is the untrained model
        if improved:
            self.best_val_loss = losses["val"]
        if it > 0 and (final or improved or self.cfg["always_save_checkpoint"]):
            if not self.save(losses["val"], best=improved):
                return False
            self.log.info(f"saved checkpoint to {self.out_dir} (iter {it})")
        return True

    # -- the loop ------------------------------------------------------------------------------------------------

    def step(self, lr, stop, nan_iter=-1, nan_grad_iter=-1):
        """One optimizer step. Returns (mean loss over ranks, grad norm, stop requested on any rank, ok).
        ok is False, and the optimizer never touches the weights, for a non-finite loss, or a non-finite gradient
        norm without a GradScaler (with fp16's scaler an overflow is routine: the scaler skips the step itself)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = accumulate_gradients(self.run_model, self.batches, self.ctx, self.scaler, self.n_micro,
                                    nan_at_micro=0 if self.iter_num == nan_iter else None)
        if self.iter_num == nan_grad_iter:
            next(self.model.parameters()).grad.fill_(float("nan"))
        grad_norm = float(clip_and_norm(self.run_model, self.optimizer, self.scaler, self.cfg["grad_clip"]))
        loss_sum, stop_votes, bad_norms = agree(
            [loss.item(), float(stop.signum != 0), float(not math.isfinite(grad_norm))], self.dist)
        loss_value = loss_sum / self.dist.world_size
        ok = math.isfinite(loss_value) and (self.scaler.is_enabled() or bad_norms == 0)
        if ok:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.iter_num += 1
            self.evaluated = False
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, stop_votes > 0, ok

    def log_step(self, it, loss, lr, grad_norm, dt):
        mfu = self.model.estimate_mfu(self.tokens_per_iter, dt, self.peak_flops * self.dist.world_size)
        self.log.info(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, grad norm {grad_norm:.3f}, {dt * 1000:.1f}ms, "
                      f"{self.tokens_per_iter / dt:,.0f} tok/s, mfu {mfu * 100:.2f}%")
        record = {"iter": it, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "tokens": self.iter_num * self.tokens_per_iter, "dt_ms": dt * 1000,
                  "tok_per_s": self.tokens_per_iter / dt, "mfu": mfu}
        if self.device.type == "cuda":
            record["peak_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.log.metrics(record)

    def run(self):
        """Train to max_iters; returns the process exit code (0 done, 1 non-finite loss, 128+signal stopped)."""
        cfg = self.cfg
        removed = [] if self.resumed or not self.dist.master else self.remove_old_run()
        self.log = RunLog(self.out_dir, self.dist.master)  # opened after restore(), whose trimming replaces the file
        try:
            if removed:
                self.log.info(f"scratch run: removed the earlier run's {', '.join(removed)} from {self.out_dir}")
            return self._loop(cfg, StopRequest(), int(os.environ.get(NAN_TEST_ENV, -1)),
                              int(os.environ.get(NAN_GRAD_TEST_ENV, -1)))
        finally:
            self.log.close()

    def remove_old_run(self):
        """A scratch run must not append to an earlier run's metrics, leave its state for a later resume, or leave its
        weights beside the new run's (a stale best_model.pt would be sampled as if it were this run's)."""
        removed = []
        for name in ("metrics.jsonl", ckpt_io.STATE_FILE, ckpt_io.MODEL_FILE, ckpt_io.BEST_FILE):
            path = self.out_dir / name
            if path.exists():
                path.unlink()
                removed.append(name)
        return removed

    def _loop(self, cfg, stop, nan_iter, nan_grad_iter):
        self.log.info(f"device {self.device}, dtype {str(self.dtype).replace('torch.', '')}, "
                      f"{self.dist.world_size} process(es), "
                      f"{self.model.get_num_params() / 1e6:.2f}M parameters, {self.tokens_per_iter:,} tokens/iter, "
                      f"dataset {cfg['dataset']} ({self.meta['tokenizer']} tokenizer, vocab {self.meta['vocab_size']})")
        if self.resumed:
            self.log.info(f"resuming from {self.out_dir} at iter {self.iter_num}")
            if self.iter_num >= cfg["max_iters"]:
                self.log.info(f"already at iter {self.iter_num} >= max_iters {cfg['max_iters']}: nothing to do")
                return 0
        while self.iter_num < cfg["max_iters"]:
            it = self.iter_num
            if it % cfg["eval_interval"] == 0 and not self.evaluated:  # (a resumed checkpoint may hold it already)
                if not self.evaluate_and_save():
                    return 1
            lr = get_lr(it, cfg)
            t0 = time.perf_counter()
            loss, grad_norm, stop_requested, ok = self.step(lr, stop, nan_iter, nan_grad_iter)
            dt = time.perf_counter() - t0
            if not ok:
                what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
                self.log.error(f"error: {what} at iter {it}; stopped without saving, so {self.out_dir} "
                               f"keeps the last good checkpoint (try a lower --learning_rate, or check the data)")
                return 1
            if it % cfg["log_interval"] == 0 or self.iter_num == cfg["max_iters"]:
                self.log_step(it, loss, lr, grad_norm, dt)
            if stop_requested:
                signum = stop.signum or signal.SIGTERM  # another rank was signalled
                if not self.save():
                    return 1
                self.log.info(f"stopped by {signal.Signals(signum).name} at iter {self.iter_num}: checkpoint saved "
                              f"to {self.out_dir}; continue with --init_from=resume")
                return 128 + signum
        if not self.evaluated and not self.evaluate_and_save(final=True):
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
    validate_config(cfg)
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
        code = train(cfg, dist_info, device)
        if dist_info.enabled:
            dist.barrier()  # no rank tears down its process group while another still uses it
        return code
    finally:
        if dist_info.enabled:
            dist.destroy_process_group()


def train(cfg, dist_info, device):
    dtype = resolve_dtype(cfg["dtype"], device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores: much faster, loss unchanged
        torch.backends.cudnn.allow_tf32 = True
    sampler = load_data(cfg, dist_info, device)
    state = None
    if cfg["init_from"] == "resume":
        state = load_resume(cfg["out_dir"])
        model_args = resume_model_args(cfg, state, sampler.meta)
    else:
        model_args = model_args_from(cfg, sampler.meta["vocab_size"])
    model = build_model(model_args, state, device, cfg["seed"])
    trainer = Trainer(cfg, dist_info, device, dtype, sampler, model, model_args)
    if state is not None:
        trainer.restore(state)
    return trainer.run()


if __name__ == "__main__":
    sys.exit(main())
