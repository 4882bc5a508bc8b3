# The original solGPT's model (8 layers, 8 heads, 768 wide, block 1024) on one GPU, on the large Hugging Face
# Solidity corpus (prepare it first: python data/seyyedaliayati-solidity-dataset/prepare.py; gated, needs a token).
#   python train.py config/train_solgpt.py
#
# Parameters: 69.3M (12.6M of them the tied 16k-token embedding); 4.9e8 training FLOPs per token.
# Tokens/iter: 16 x 1024 x 32 = 524,288; 5,000 iters = 2.6B tokens (about 1.5 epochs of that corpus).
# Time and memory are computed, not measured: at 40% MFU an A100 (312 TFLOP/s bf16) does ~2.1 s/iter, so ~3 h;
# an H100 ~1 h. Memory ~8 GB (fp32 weights, grads and AdamW moments ~1.1 GB; bf16 activations of a 16 x 1024
# micro-batch ~5 GB; logits ~1.6 GB): fits a 16 GB GPU; on a smaller one halve batch_size and double
# gradient_accumulation_steps (same tokens/iter, same result).

out_dir = "out-solgpt"
dataset = "seyyedaliayati-solidity-dataset"

n_layer = 8
n_head = 8
n_embd = 768
block_size = 1024
dropout = 0.0
bias = False
pos_encoding = "learned"  # the original solGPT's (nanoGPT's GPT-2) architecture, not train.py's defaults
norm = "layernorm"
mlp = "gelu"
qk_norm = False

batch_size = 16
gradient_accumulation_steps = 32  # ~0.5M tokens per step, as GPT-2/nanoGPT
max_iters = 5000
lr_decay_iters = 5000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
weight_decay = 0.1

eval_interval = 250
eval_iters = 100
log_interval = 10
compile = True  # ~1.3-2x faster on recent GPUs after a minute of compiling
