# GPT-2 small's shape (12 layers, 12 heads, 768 wide, block 1024) on one or more GPUs:
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m.py     # 8 GPUs, one node
#   python train.py config/train_gpt2_124m.py                                         # 1 GPU (8x longer)
#
# Parameters: 97.7M with our 16k-token vocabulary (GPT-2's 124M is with its 50k vocabulary: prepare the data
# with the gpt2 tokenizer to get exactly that); 7.0e8 training FLOPs per token.
# Tokens/iter: 12 x 1024 x 40 = 491,520 whatever the GPU count (the 40 micro-batches are divided among the ranks;
# use a GPU count that divides 40); 5,000 iters = 2.5B tokens.
# Time and memory are computed, not measured: 3.4e14 FLOPs/iter; at 40% MFU 8x A100 take ~0.35 s/iter (~30 min),
# one H100 ~0.9 s/iter (~1.2 h). Memory per GPU ~7 GB (weights/grads/AdamW ~1.6 GB, bf16 activations of a
# 12 x 1024 micro-batch ~5 GB).

out_dir = "out-gpt2-124m"
dataset = "seyyedaliayati-solidity-dataset"

n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
bias = False
pos_encoding = "learned"  # GPT-2 small's architecture, not train.py's defaults
norm = "layernorm"
mlp = "gelu"
qk_norm = False

batch_size = 12
gradient_accumulation_steps = 5 * 8
max_iters = 5000
lr_decay_iters = 5000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
weight_decay = 0.1

eval_interval = 500
eval_iters = 200
log_interval = 10
compile = True
