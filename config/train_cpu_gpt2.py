# The GPT-2 recipe that was config/train_cpu.py until the ablation (python ablate.py; README "Ablations") replaced it:
# learned positions, LayerNorm, GELU MLP, AdamW. Kept as the ablation's baseline, so every row of its table stays
# reproducible, and for a run that exports as a transformers GPT2LMHeadModel:
#   python train.py config/train_cpu_gpt2.py --out_dir=out-gpt2
#
# Model: 4 layers, 4 heads, 192 wide, block 512: 4.93M parameters as train.py counts them (without the
# position embedding), 3.16M of them the tied 16k-token embedding.
# Tokens/iter: 2 micro-batches x 4 x 512 = 4,096; 600 iters = 2.5M tokens (about 1.3 epochs of the training split).
# Two micro-batches so that `torchrun --standalone --nproc_per_node=2 train.py config/train_cpu.py` also runs (each
# rank then does one): gradient_accumulation_steps is global and must be a multiple of the number of processes.
# Measured on a 2-core Xeon (AVX-512, torch 2.13, fp32) with this config, `python bench.py` (30 iters after 5 of
# warm-up): median 879 ms/iter (848-917), 4,659 tok/s, peak RSS 1.1 GB. `bash quickstart.sh` trained the 600
# iterations + 7 evaluations in 8.5 minutes there, to val loss 6.17 nats/token, 1.91 bits per byte.
# Block 512 rather than 256: the same tokens/iter cost ~7% more time per iter, but the model sees whole small
# contracts, and sampling with the KV cache gains more over recomputation (~6x vs ~4x at 512 new tokens).

out_dir = "out-cpu-gpt2"
dataset = "solidity-packages"  # device stays auto: a GPU or Apple Silicon just runs it faster
dtype = "float32"  # as the ablation measured this recipe (dtype auto would now pick bf16 on a CPU with AMX)
pos_encoding = "learned"  # the recipe spelled out: train.py's defaults are the new default's
norm = "layernorm"
mlp = "gelu"
qk_norm = False
optimizer = "adamw"

# small enough to learn fast on CPU; wide enough to model Solidity's syntax
n_layer = 4
n_head = 4
n_embd = 192
block_size = 512  # a whole small contract, or a function with its NatSpec and context
dropout = 0.0  # ~1 epoch: no overfitting to fight
bias = False

batch_size = 4
gradient_accumulation_steps = 2  # global: 2 micro-batches in one process, 1 per rank under torchrun with 2
max_iters = 600
lr_decay_iters = 600  # cosine down to min_lr exactly at the end
learning_rate = 2e-3  # small models tolerate (and need) a high rate to learn in few steps
min_lr = 2e-4
warmup_iters = 50
weight_decay = 0.1

eval_interval = 100
eval_iters = 10
log_interval = 10
