"""bench.py's own logic. Speed is measured by bench.py, never asserted here."""
import json
import subprocess
import sys
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parents[1]


def test_stats_median_min_max():
    assert bench.stats([3, 1, 2, 10]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_unknown_section_is_one_line_error():
    r = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--only=sample,nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope" in r.stderr


def test_sample_section_compares_cache_with_recomputation(tmp_path):
    # The CPU config's shape with random weights: the greedy tokens of both paths must be equal (bench checks and
    # records it), for 512 new tokens, which crosses block_size's sliding window at least once.
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, str(ROOT / "bench.py"), "--only=sample", "--quick", f"--out={out}"],
                   check=True, capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text())
    s = report["sample"]
    assert s["greedy_tokens_equal"] is True
    assert s["new_tokens"] == 512 and s["prompt_tokens"] + s["new_tokens"] > s["block_size"]
    assert s["kv_speedup"] == s["kv_tokens_per_s"] / s["nocache_tokens_per_s"]
    assert set(report["machine"]) >= {"cpu", "cores", "torch"}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # written atomically, no temp file left


def test_child_peak_memory_is_the_childs_own():
    # The parent holds 300 MB: a measurement that counted the pages shared between fork and exec would report more
    # than that for a child that only ever touches ~100 MB.
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    code, wall, peak_mb, output = bench.run_child(
        [sys.executable, "-c", "import time; b = bytearray(100 * 2**20); b[::4096] = b'y' * len(b[::4096]); "
                               "time.sleep(0.3); print('done')"])
    assert code == 0 and output.strip() == "done"
    assert 80 < peak_mb < 250, peak_mb
    del ballast
