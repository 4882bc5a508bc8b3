# Train a small solGPT on the default corpus (data/solidity-packages) on a laptop-class CPU in about 10 minutes.
#   python data/solidity-packages/prepare.py && python train.py config/train_cpu.py
#
# The recipe is the ablation's winner (README "Ablations", `python ablate.py`): Qwen3's architecture (RoPE, RMSNorm,
# SwiGLU, QK-norm; train.py's defaults, exported as a transformers Qwen3ForCausalLM), Muon for the blocks' matrices,
# AdamW at a high rate for the tied embedding and the gains, and fill-in-the-middle on half the documents (so this
# model can also complete code between a prefix and a suffix: complete.py). config/train_cpu_gpt2.py is the GPT-2
# recipe it replaced.
#
# Model: 4 layers, 4 heads, 192 wide, block 512: 4.93M parameters (no position table), 3.16M of them the tied
# 16k-token embedding.
# Tokens/iter: 2 micro-batches x 4 x 512 = 4,096. The run is a time budget, not an iteration count: 600 seconds of
# training on whatever machine this is (budget_s; the iterations that fit are decided from the speed measured during
# the warmup, logged, and kept by a resume). On the 2-core Xeon with AMX the ablation measured, bf16 autocast +
# torch.compile run 7,920 tok/s: about 1,100 iterations, 4.5M tokens (2.3 epochs of the training split); on a CPU
# without AMX, float32 (about 4,100 tok/s there, half as many iterations). Evaluations come on top (~1 minute).
# A fixed length instead: --max_iters=N on the command line (that turns the budget off; the cosine ends at N).
# Two micro-batches so that `torchrun --standalone --nproc_per_node=2 train.py config/train_cpu.py` also runs (each
# rank then does one): gradient_accumulation_steps is global and must be a multiple of the number of processes.

out_dir = "out-cpu"
dataset = "solidity-packages"  # device stays auto: a GPU or Apple Silicon just runs it faster
dtype = "auto"  # bf16 autocast on a CPU with AMX (1.3x float32), float32 on other CPUs (runtime.resolve_dtype)
compile = True  # 1.5x on top of bf16 there; without a C++ compiler the run says so and trains eager
budget_s = 600.0

# small enough to learn fast on CPU; wide enough to model Solidity's syntax
n_layer = 4
n_head = 4
n_embd = 192
block_size = 512  # a whole small contract, or a function with its NatSpec and context
dropout = 0.0  # weight decay regularises instead (dropout would cost speed)
bias = False
# pos_encoding, norm, mlp, qk_norm: train.py's defaults (rope, rmsnorm, swiglu, True)

batch_size = 4
gradient_accumulation_steps = 2  # global: 2 micro-batches in one process, 1 per rank under torchrun with 2
warmup_iters = 50  # the budget measures the speed over its second half

optimizer = "muon"  # Muon (muon_lr 0.01) for the blocks' weight matrices; AdamW (learning_rate) for the rest
learning_rate = 8e-3  # AdamW's: the tied embedding learns fastest at a rate far above GPT-2's (ablation: 4e-3..8e-3)
min_lr = 0.0  # cosine all the way down (seed 1337: 1.7419 vs 1.7581 at 8e-4; README "Ablations")
# 2.3 epochs of packages unlike the val ones: decoupled weight decay (Muon's and AdamW's, lr x 0.6 per step) is the
# largest single gain in the table, 0.1 -> 0.6: 1.7287 -> 1.5919 mean of two seeds (0.3: 1.6686; 1.2: worse)
weight_decay = 0.6

fim_rate = 0.5  # fill in the middle (fim.py); its cost in left-to-right bits per byte: README "Ablations"

eval_interval = 100
eval_iters = 10
log_interval = 10
