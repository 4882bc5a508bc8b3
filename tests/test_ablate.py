"""ablate.py's logic with the train.py and bench.py subprocesses replaced: iterations from the budget, the command each
run gets, reading the final bpb, caching/resume, failures, and the table."""

import json
import re
from pathlib import Path

import pytest

import ablate

ROOT = Path(__file__).resolve().parents[1]


def arg(cmd, key):
    values = [a.split("=", 1)[1] for a in cmd if a.startswith(f"--{key}=")]
    return values[-1] if values else None  # the configurator applies the last one


class FakeRuns:
    """Stands in for bench.bench_train (speed) and bench.run_child (training): records the calls and writes the
    metrics.jsonl a real train.py would, with a val bpb that encodes the seed and the variant's n_embd."""

    def __init__(self, monkeypatch, ms_per_iter=None, fail_when=None, final_flag=True):
        self.speed_calls, self.train_cmds = [], []
        self.ms_per_iter = ms_per_iter or {}
        self.fail_when, self.final_flag = fail_when, final_flag
        monkeypatch.setattr(ablate, "bench_train", self.bench_train)
        monkeypatch.setattr(ablate, "run_child", self.run_child)

    def bench_train(self, config, device, iters, warmup, extra):
        self.speed_calls.append((iters, warmup, list(extra)))
        ms = self.ms_per_iter.get(arg(extra, "n_embd"), 1200.0)
        return {"ms_per_iter": ms, "tokens_per_s": 4096 / ms * 1000, "iters_measured": iters, "startup_s": 30.0}

    def run_child(self, cmd):
        self.train_cmds.append(cmd)
        if self.fail_when and self.fail_when(cmd):
            return 1, 0.5, 100.0, "some output\nerror: boom; try something"
        seed, width = int(arg(cmd, "seed")), int(arg(cmd, "n_embd") or 192)
        bpb = 2.0 - width / 1000 + (seed - 1) / 100
        records = [{"iter": 0, "train_loss": 9.0, "val_loss": 9.0, "val_bpb": 3.0},
                   {"iter": 5, "loss": 4.0, "grad_norm": 1.0}]
        final = {"iter": int(arg(cmd, "max_iters")), "train_loss": 4.0, "val_loss": 4.1, "val_bpb": bpb}
        if self.final_flag:
            final["final"] = True
        out_dir = Path(arg(cmd, "out_dir"))
        out_dir.mkdir(parents=True, exist_ok=True)  # as train.py does
        (out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*records, final]))
        return 0, 1.0, 100.0, "done"


@pytest.fixture
def variants(monkeypatch):
    monkeypatch.setattr(ablate, "VARIANTS", {"baseline": [], "wide": ["--n_embd=256"], "narrow": ["--n_embd=128"]})


def test_iters_for_budget():
    assert ablate.iters_for_budget(600, 4096 / 1.2, 4096) == 500  # 1.2 s per 4,096-token iteration
    assert ablate.iters_for_budget(600, 4096 / 0.879, 4096) == 682  # 682.6 iterations fit; the 683rd would overrun
    assert ablate.iters_for_budget(600, 4096 / 1.2, 4096, compile_s=30) == 475  # 570 s left for training
    assert ablate.iters_for_budget(1, 4096.0, 4096) == 10  # never fewer than 10
    # a batch-size ramp: 490 ms per (smaller) step, 4,180 tokens/s; 612 full iterations' worth, not 600 / 0.49
    assert ablate.iters_for_budget(600, 4180.0, 4096) == 612


def test_each_variant_gets_the_same_budget_in_its_own_iterations(tmp_path, monkeypatch, variants):
    fake = FakeRuns(monkeypatch, ms_per_iter={"256": 2000.0, "128": 500.0})
    out = tmp_path / "ablation.json"
    assert ablate.main([f"--out={out}", "--budget_s=300", "--seeds=1,2", "--speed_iters=7", "--speed_warmup=2"]) == 0
    assert [c[:2] for c in fake.speed_calls] == [(7, 2)] * 3
    assert [c[2] for c in fake.speed_calls] == [[], ["--n_embd=256"], ["--n_embd=128"]]
    # 300 s at 1200, 2000 and 500 ms/iter
    got = [(arg(c, "n_embd"), arg(c, "seed"), arg(c, "max_iters"), arg(c, "lr_decay_iters")) for c in fake.train_cmds]
    assert got == [(None, "1", "250", "250"), (None, "2", "250", "250"), ("256", "1", "150", "150"),
                   ("256", "2", "150", "150"), ("128", "1", "600", "600"), ("128", "2", "600", "600")]
    # the config's warm-up (50) unless a tenth of the run is shorter; one final evaluation; the run's own out_dir
    assert [arg(c, "warmup_iters") for c in fake.train_cmds] == ["25", "25", "15", "15", "50", "50"]
    assert [arg(c, "eval_interval") for c in fake.train_cmds] == ["250", "250", "150", "150", "600", "600"]
    assert len({arg(c, "out_dir") for c in fake.train_cmds}) == 6
    results = json.loads(out.read_text())
    assert results["settings"]["budget_s"] == 300
    wide = results["variants"]["wide"]
    assert wide["iters"] == 150 and wide["speed"]["ms_per_iter"] == 2000.0 and wide["speed"]["tokens_per_s"] == 2048
    assert wide["runs"]["1"]["val_bpb"] == pytest.approx(2.0 - 0.256) and wide["runs"]["1"]["exact"] is True
    assert wide["runs"]["2"]["val_bpb"] == pytest.approx(2.0 - 0.256 + 0.01)


def test_results_are_cached_and_a_run_resumes_where_it_stopped(tmp_path, monkeypatch, variants):
    out = tmp_path / "ablation.json"
    first = FakeRuns(monkeypatch)
    ablate.main([f"--out={out}", "--seeds=1,2"])
    assert (len(first.speed_calls), len(first.train_cmds)) == (3, 6)
    done = out.read_text()

    again = FakeRuns(monkeypatch)
    ablate.main([f"--out={out}", "--seeds=1,2"])
    assert (again.speed_calls, again.train_cmds) == ([], [])  # nothing rerun
    assert out.read_text() == done

    # an interrupted ablation: wide's second seed and narrow's speed were never measured
    results = json.loads(done)
    del results["variants"]["wide"]["runs"]["2"]
    del results["variants"]["narrow"]
    out.write_text(json.dumps(results))
    resumed = FakeRuns(monkeypatch)
    ablate.main([f"--out={out}", "--seeds=1,2"])
    assert [c[2] for c in resumed.speed_calls] == [["--n_embd=128"]]
    assert [(arg(c, "n_embd"), arg(c, "seed")) for c in resumed.train_cmds] == [
        ("256", "2"), ("128", "1"), ("128", "2")]
    assert json.loads(out.read_text()) == json.loads(done)

    # a third seed adds one run per variant; a changed variant is measured again from scratch
    monkeypatch.setitem(ablate.VARIANTS, "wide", ["--n_embd=320"])
    more = FakeRuns(monkeypatch)
    ablate.main([f"--out={out}", "--seeds=1,2,3"])
    assert [c[2] for c in more.speed_calls] == [["--n_embd=320"]]
    assert sorted((arg(c, "n_embd") or "192", arg(c, "seed")) for c in more.train_cmds) == [
        ("128", "3"), ("192", "3"), ("320", "1"), ("320", "2"), ("320", "3")]


def test_other_settings_refuse_the_cached_file(tmp_path, monkeypatch, variants, capsys):
    out = tmp_path / "ablation.json"
    FakeRuns(monkeypatch)
    ablate.main([f"--out={out}", "--variants=baseline", "--seeds=1"])
    with pytest.raises(SystemExit) as exc:
        ablate.main([f"--out={out}", "--variants=baseline", "--seeds=1", "--budget_s=120"])
    assert str(exc.value) == (f"error: {out} holds results for budget_s=600.0, not 120.0; pass another --out (or the "
                              f"same settings) so the table compares like with like")
    capsys.readouterr()
    assert ablate.main([f"--out={out}", "--table", "--seeds=1", "--budget_s=120"]) == 0  # showing needs no match
    row = capsys.readouterr().out.splitlines()[2]
    assert row.startswith("| baseline | (config as is) | 3,413 | 500 | 1.8080 | 1.8080 |")  # 2.0 - 192 / 1000
    with pytest.raises(SystemExit) as exc:
        ablate.main([f"--out={tmp_path / 'none.json'}", "--table"])
    assert str(exc.value) == f"error: {tmp_path / 'none.json'} not found: run the ablation first, or pass its --out"


def test_a_failed_variant_is_recorded_the_others_run_and_a_rerun_retries_it(tmp_path, monkeypatch, variants, capsys):
    out = tmp_path / "ablation.json"
    fake = FakeRuns(monkeypatch, fail_when=lambda cmd: arg(cmd, "n_embd") == "256" and arg(cmd, "seed") == "2")
    assert ablate.main([f"--out={out}", "--seeds=1,2"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (  # (the progress bar writes above it)
        "error: 1 variant(s) failed (wide); rerun the same command to retry them")
    results = json.loads(out.read_text())
    assert results["variants"]["wide"]["error"] == "train.py exited with 1: some output | error: boom; try something"
    assert set(results["variants"]["wide"]["runs"]) == {"1"}
    assert set(results["variants"]["narrow"]["runs"]) == {"1", "2"}
    assert len(fake.train_cmds) == 6

    retry = FakeRuns(monkeypatch)
    assert ablate.main([f"--out={out}", "--seeds=1,2"]) == 0
    assert [(arg(c, "n_embd"), arg(c, "seed")) for c in retry.train_cmds] == [("256", "2")]
    assert "error" not in json.loads(out.read_text())["variants"]["wide"]


def test_unknown_knob_fails_its_variant_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "VARIANTS", {"future": ["--no_such_knob=1"]})
    fake = FakeRuns(monkeypatch)
    out = tmp_path / "ablation.json"
    assert ablate.main([f"--out={out}", "--seeds=1"]) == 1
    assert (fake.speed_calls, fake.train_cmds) == ([], [])
    assert json.loads(out.read_text())["variants"]["future"]["error"] == (
        "unknown option --no_such_knob (see --help for the known keys)")


def test_final_val_bpb_prefers_the_final_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"iter": 0, "val_loss": 9.0, "val_bpb": 3.0}, {"iter": 10, "loss": 4.0},
               {"iter": 10, "val_loss": 4.0, "val_bpb": 1.6, "final": True},
               {"iter": 10, "val_loss": 4.2, "val_bpb": 1.7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ablate.final_val_bpb(path) == (1.6, True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records[:2] + records[3:]))
    assert ablate.final_val_bpb(path) == (1.7, False)  # no final record: the last evaluation, flagged inexact
    path.write_text(json.dumps(records[1]) + "\n")
    assert ablate.final_val_bpb(path) == (None, False)


def test_table(monkeypatch):
    def entry(overrides, tps, iters, bpbs, exact=True, **extra):
        return {"overrides": overrides, "speed": {"tokens_per_s": tps, "ms_per_iter": 1.0}, "iters": iters,
                "runs": {str(s): {"val_bpb": b, "exact": exact} for s, b in zip((1, 2), bpbs) if b is not None},
                **extra}

    results = {"settings": {}, "variants": {
        "baseline": entry([], 4659.2, 683, [1.90, 1.92]),
        "rope": entry(["--pos_encoding=rope"], 4500.0, 660, [1.80, 1.81]),
        "combo": entry(["--pos_encoding=rope", "--mlp=swiglu"], 4000.4, 590, [1.71, None]),
        "old": entry(["--dtype=bfloat16"], 5000.0, 800, [1.95, 1.97], exact=False),
        "close": entry(["--init=scaled"], 4659.2, 683, [1.89, 1.93]),
        "muon": {"overrides": ["--optimizer=muon"], "runs": {}, "error": "unknown option --optimizer"},
    }}
    expected = """\
| variant | overrides | tokens/s | iters | val bpb seed 1 | val bpb seed 2 | mean | delta vs baseline | verdict |
|---|---|---:|---:|---:|---:|---:|---:|---:|
| baseline | (config as is) | 4,659 | 683 | 1.9000 | 1.9200 | 1.9100 | (reference) | (reference) |
| rope | `pos_encoding=rope` | 4,500 | 660 | 1.8000 | 1.8100 | 1.8050 | -0.1050 (-5.5%) | better |
| combo | `pos_encoding=rope` `mlp=swiglu` | 4,000 | 590 | 1.7100 | - | - | - | - |
| old | `dtype=bfloat16` | 5,000 | 800 | 1.9500* | 1.9700* | 1.9600 | +0.0500 (+2.6%) | worse |
| close | `init=scaled` | 4,659 | 683 | 1.8900 | 1.9300 | 1.9100 | +0.0000 (+0.0%) | within seed noise |
| muon | `optimizer=muon` | - | - | - | - | failed | - | - |

\\* sampled periodic evaluation: this train.py wrote no final whole-val-split record

failed:
- muon: unknown option --optimizer"""
    assert ablate.render_table(results, [1, 2]) == expected
    # rows can be selected; the delta still uses the file's baseline
    assert ablate.render_table(results, [1, 2], names=["rope"]).splitlines()[2] == expected.splitlines()[3]
    monkeypatch.setattr(ablate, "DEFAULT_VARIANT", "rope")  # the chosen default says so
    assert ablate.render_table(results, [1, 2], names=["rope"]).splitlines()[2].endswith(
        "| **better: the new default** |")


def test_cli_errors_are_one_line(capsys):
    for argv, text in ((["--variants=baseline,nope"], "error: unknown variant(s) nope: choose from "),
                       (["--seeds=1,x"], "error: --seeds must be comma-separated integers, got '1,x'"),
                       (["--add=bad"], "error: --add=bad is not NAME:key=value[,key=value...]")):
        with pytest.raises(SystemExit) as exc:
            ablate.main(argv)
        err = capsys.readouterr().err + (str(exc.value) if not isinstance(exc.value.code, int) else "")
        assert re.match(re.escape(text), err) and err.strip().count("\n") == 0, err


def test_real_train_runs(tmp_path):
    """The commands ablate.py builds, run by the real train.py on tiny data (no fakes): one variant, one seed."""
    from core_data import make_dataset
    make_dataset(tmp_path / "data", "tiny")
    config = tmp_path / "tiny.py"
    config.write_text(f"dataset = 'tiny'\ndata_root = {str(tmp_path / 'data')!r}\nn_layer = 1\nn_head = 2\n"
                      f"n_embd = 32\nblock_size = 32\nbatch_size = 4\neval_iters = 2\n")
    out = tmp_path / "ablation.json"
    assert ablate.main([f"--config={config}", "--add=small_lr:learning_rate=1e-4", "--variants=small_lr", "--seeds=3",
                        "--budget_s=0.01", "--speed_iters=3", "--speed_warmup=1", f"--out={out}"]) == 0
    entry = json.loads(out.read_text())["variants"]["small_lr"]
    assert entry["overrides"] == ["--learning_rate=1e-4"] and entry["iters"] == 10  # the 10-iteration floor
    assert entry["speed"]["iters_measured"] == 3 and entry["speed"]["tokens_per_s"] > 0
    assert 0 < entry["runs"]["3"]["val_bpb"] < 20


def test_a_speed_neutral_variant_trains_for_its_architectures_speed(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "VARIANTS", {
        "baseline": [], "wide": ["--n_embd=256"], "wide_lr": ["--n_embd=256", "--learning_rate=3e-3"],
        "zero": ["--init=zero_proj"], "wide_deep": ["--n_embd=256", "--n_layer=6"]})
    fake = FakeRuns(monkeypatch, ms_per_iter={"256": 2000.0})
    out = tmp_path / "ablation.json"
    assert ablate.main([f"--out={out}", "--seeds=1"]) == 0
    # measured: the three architectures; wide_lr and zero only change what is learned, not the time of a step
    assert [c[2] for c in fake.speed_calls] == [[], ["--n_embd=256"], ["--n_embd=256", "--n_layer=6"]]
    results = json.loads(out.read_text())["variants"]
    assert results["wide_lr"]["speed_from"] == "wide" and results["zero"]["speed_from"] == "baseline"
    assert results["wide_lr"]["iters"] == results["wide"]["iters"] == 300
    assert results["zero"]["iters"] == results["baseline"]["iters"] == 500
    assert "speed_from" not in results["wide_deep"]  # n_layer changes the step: its own speed
    iters = {tuple(c[3:-8]): arg(c, "max_iters") for c in fake.train_cmds}
    assert iters[("--n_embd=256", "--learning_rate=3e-3")] == "300"
    assert "| wide_lr | `n_embd=256` `learning_rate=3e-3` | 2,048 (as wide) | 300 |" in ablate.render_table(
        json.loads(out.read_text()), [1])


def test_compile_time_comes_out_of_the_budget_and_speeds_are_shared_by_speed_key(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "VARIANTS", {
        "baseline": [], "compiled_lr": ["--compile=True", "--learning_rate=3e-3"],
        "compiled_lr_min0": ["--compile=True", "--learning_rate=3e-3", "--min_lr=0.0"]})
    fake = FakeRuns(monkeypatch)  # 1,200 ms per 4,096-token iteration; 30 s beyond steady state in the warm-up
    out = tmp_path / "ablation.json"
    assert ablate.main([f"--out={out}", "--seeds=1"]) == 0
    results = json.loads(out.read_text())["variants"]
    assert "compile_s" not in results["baseline"]["speed"] and results["baseline"]["iters"] == 500
    assert results["compiled_lr"]["speed"]["compile_s"] == 30.0 and results["compiled_lr"]["iters"] == 475
    # no variant has only --compile=True: the one that measured itself lends its speed to the other
    assert [c[2] for c in fake.speed_calls] == [[], ["--compile=True", "--learning_rate=3e-3"]]
    assert results["compiled_lr_min0"]["speed_from"] == "compiled_lr" and results["compiled_lr_min0"]["iters"] == 475


def test_speeds_are_never_mixed_between_machines(tmp_path, monkeypatch, variants):
    out = tmp_path / "ablation.json"
    FakeRuns(monkeypatch)
    assert ablate.main([f"--out={out}", "--variants=baseline", "--seeds=1"]) == 0
    results = json.loads(out.read_text())
    assert results["variants"]["baseline"]["runs"]["1"]["cpu"] == results["machine"]["cpu"]
    results["machine"]["cpu"] = "Some Other CPU"
    out.write_text(json.dumps(results))
    # training a variant whose speed is known is fine anywhere (fixed iterations) ...
    again = FakeRuns(monkeypatch)
    assert ablate.main([f"--out={out}", "--variants=baseline", "--seeds=1,2"]) == 0
    assert (len(again.speed_calls), len(again.train_cmds)) == (0, 1)
    # ... but measuring a new speed here would give another machine's budget
    assert ablate.main([f"--out={out}", "--variants=wide", "--seeds=1"]) == 1
    wide = json.loads(out.read_text())["variants"]["wide"]
    here = ablate.machine_info("cpu")["cpu"]
    assert wide["error"] == (f"the speeds in this results file were measured on 'Some Other CPU', this machine is "
                             f"{here!r}: a speed measured here would give another machine's budget; measure on that "
                             f"machine, or pass another --out for a table of this one")
    assert again.speed_calls == [] and "speed" not in wide


def test_keep_models_keeps_each_runs_out_dir(tmp_path, monkeypatch, variants):
    fake = FakeRuns(monkeypatch)
    keep = tmp_path / "models"
    assert ablate.main([f"--out={tmp_path / 'a.json'}", "--variants=baseline,wide", "--seeds=1",
                        f"--keep_models={keep}"]) == 0
    assert [arg(c, "out_dir") for c in fake.train_cmds] == [str(keep / "baseline-1"), str(keep / "wide-1")]
    assert (keep / "wide-1" / "metrics.jsonl").is_file()  # still there after the run was read
    for c in fake.train_cmds:  # a kept run also evaluates on the way (its curve); a plain run only at the end
        assert int(arg(c, "eval_interval")) == int(arg(c, "max_iters")) // ablate.CURVE_POINTS
    plain = FakeRuns(monkeypatch)
    assert ablate.main([f"--out={tmp_path / 'b.json'}", "--variants=baseline", "--seeds=1"]) == 0
    assert [arg(c, "eval_interval") for c in plain.train_cmds] == [arg(plain.train_cmds[0], "max_iters")]


def test_the_default_config_is_the_chosen_variant(monkeypatch):
    """config/train_cpu.py is the ablation's DEFAULT_VARIANT on the old default: every knob that changes training
    agrees, on the machine the ablation measured (dtype auto is the variant's bf16 on a CPU with AMX); its run length
    is the ablation's budget (train.py's budget_s decides the iterations as ablate.py does, from the speed)."""
    import torch
    import runtime
    from bench import load_config
    new = load_config(ROOT / "config" / "train_cpu.py")
    chosen = load_config(ROOT / "config" / "train_cpu_gpt2.py", ablate.VARIANTS[ablate.DEFAULT_VARIANT])
    differ = {k for k in new if new[k] != chosen[k]} - {"out_dir", "max_iters", "lr_decay_iters", "budget_s", "dtype"}
    assert differ == set(), {k: (new[k], chosen[k]) for k in differ}
    results = json.loads((ROOT / "assets" / "ablation.json").read_text())
    assert new["budget_s"] == results["settings"]["budget_s"] == 600
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    assert runtime.resolve_dtype(new["dtype"], torch.device("cpu"), training=True) == runtime.DTYPES[chosen["dtype"]]
