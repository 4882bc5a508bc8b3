"""configurator.py: config files and --key=value overrides, strict keys and types, one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

import train
from configurator import configure

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = dict(out_dir="out", max_iters=10, learning_rate=1e-3, bias=False, device="auto")


def error_of(argv):
    with pytest.raises(SystemExit) as exc:
        configure(DEFAULTS, argv)
    return str(exc.value.code)


def test_overrides_get_real_types():
    cfg = configure(DEFAULTS, ["--max_iters=100", "--learning_rate=3e-4", "--bias=True", "--out_dir=out-cpu",
                               "--device=cuda:1"])
    assert cfg == dict(out_dir="out-cpu", max_iters=100, learning_rate=3e-4, bias=True, device="cuda:1")


def test_int_is_a_float_and_strings_stay_strings():
    cfg = configure({**DEFAULTS, "start": ""},
                    ["--learning_rate=1", "--out_dir=123", "--device='cpu'", "--start=[1, 2]"])
    assert cfg["learning_rate"] == 1.0 and type(cfg["learning_rate"]) is float
    # string keys take the text exactly as typed (the shell already removed its own quotes): never literal_eval'd
    assert cfg["out_dir"] == "123" and cfg["device"] == "'cpu'" and cfg["start"] == "[1, 2]"


def test_unknown_key_and_wrong_type_messages():
    assert error_of(["--max_iter=5"]) == "error: unknown option --max_iter (see --help for the known keys)"
    assert error_of(["--max_iters=abc"]) == "error: --max_iters expects int, got 'abc'"
    assert error_of(["--max_iters=1.5"]) == "error: --max_iters expects int, got 1.5"
    assert error_of(["--bias=1"]) == "error: --bias expects bool (True/False), got 1"
    assert error_of(["--learning_rate=fast"]) == "error: --learning_rate expects float, got 'fast'"
    assert error_of(["positional"]).startswith("error: unexpected argument 'positional'")


def test_config_file_applies_and_is_checked(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("import math\n_helper = 3\nmax_iters = 2 * _helper\nout_dir = 'o' + str(max_iters)\n")
    cfg = configure(DEFAULTS, [str(good), "--bias=True"])
    assert cfg["max_iters"] == 6 and cfg["out_dir"] == "o6" and cfg["bias"] is True
    bad_key = tmp_path / "bad_key.py"
    bad_key.write_text("max_itres = 5\n")
    assert error_of([str(bad_key)]) == f"error: unknown key 'max_itres' in config file {bad_key} (see --help for the known keys)"
    bad_type = tmp_path / "bad_type.py"
    bad_type.write_text("max_iters = '5'\n")
    assert error_of([str(bad_type)]) == f"error: {bad_type}: max_iters expects int, got '5'"
    assert error_of([str(tmp_path / "missing.py")]) == f"error: config file {tmp_path / 'missing.py'} not found"


def test_later_arguments_win(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("max_iters = 7\n")
    assert configure(DEFAULTS, ["--max_iters=3", str(f)])["max_iters"] == 7
    assert configure(DEFAULTS, [str(f), "--max_iters=3"])["max_iters"] == 3


def test_bare_flag_sets_bool():
    assert configure(DEFAULTS, ["--bias"])["bias"] is True
    assert error_of(["--max_iters"]) == "error: --max_iters needs a value: --max_iters=<int>"


@pytest.mark.parametrize("script", ["train.py", "sample.py"])
def test_scripts_exit_with_one_line_and_help_lists_keys(script):
    proc = subprocess.run([sys.executable, str(ROOT / script), "--max_iters=abc", "--nope=1"] if script == "train.py"
                          else [sys.executable, str(ROOT / script), "--top_k=abc"], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --")
    help_ = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "usage: python" in help_.stdout
    for key in (["out_dir", "max_iters", "gradient_accumulation_steps", "pos_encoding", "peak_flops"]
                if script == "train.py" else ["ckpt", "top_p", "use_kv_cache", "out"]):
        assert f"--{key}" in help_.stdout


def test_huge_or_deep_literal_is_one_line_error():
    msg = error_of(["--max_iters=" + "[" * 100_000 + "]" * 100_000])
    assert msg.startswith("error: --max_iters") and "\n" not in msg


def test_cpu_config_runs_on_two_processes_with_same_tokens_per_iter():
    cfg = configure(train.DEFAULTS, [str(ROOT / "config" / "train_cpu.py")])
    assert cfg["gradient_accumulation_steps"] % 2 == 0  # torchrun --nproc_per_node=2 needs a multiple of 2
    assert cfg["batch_size"] * cfg["gradient_accumulation_steps"] * cfg["block_size"] == 4096


@pytest.mark.parametrize("arg,msg", [("--grad_clip=-1", "--grad_clip must be >= 0"),
                                     ("--learning_rate=0", "--learning_rate must be > 0"),
                                     ("--min_lr=1.0", "--min_lr must be in [0, learning_rate"),
                                     ("--min_lr=-1e-5", "--min_lr must be in [0"),
                                     ("--warmup_iters=-1", "--warmup_iters must be >= 0"),
                                     ("--beta2=1.0", "--beta2 must be in [0, 1)"),
                                     ("--beta1=-0.1", "--beta1 must be in [0, 1)"),
                                     ("--peak_flops=-1", "--peak_flops must be >= 0"),
                                     ("--cls_extra_train=True", "--cls_extra_train adds offline-labelled packages: "
                                      "it needs --dataset=slither-labels, got 'solidity-packages'")])
def test_train_config_bounds(arg, msg):
    with pytest.raises(SystemExit) as exc:
        train.validate_config(configure(train.DEFAULTS, [arg]))
    assert str(exc.value.code).startswith(f"error: {msg}")
