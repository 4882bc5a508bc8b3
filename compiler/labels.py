"""Slither's verdict on one .sol file, in the labels of the Hugging Face slither-audited-smart-contracts dataset.

    from compiler.labels import analyse, classes_of
    result = analyse("node_modules/pkg/A.sol", working_dir="tree/pkg")  # {"status", "detectors", "solc", ...}
    classes_of(result["detectors"])                                      # ["reentrancy"] or ["safe"]

DETECTORS are the dataset's 38 Slither checks (its `all` config, `safe` aside). CLASS_OF maps each to the
dataset's `big` classes. The dataset built `big` from label_mappings.json, which follows the DASP top-10 categories
(its README); that file is not reachable offline, so the mapping below is ours, DASP by DASP, and documented in
data/slither-labels/README.md:
  reentrancy      <- reentrancy-eth, reentrancy-no-eth                           (DASP 1 reentrancy)
  access-control  <- suicidal, arbitrary-send, controlled-delegatecall, tx-origin, unprotected-upgrade, backdoor
                                                                                 (DASP 2 access control)
  arithmetic      <- divide-before-multiply, incorrect-shift, tautology          (DASP 3 arithmetic)
  unchecked-calls <- unchecked-lowlevel, unchecked-send, unchecked-transfer, unused-return   (DASP 4)
  other           <- every other detector of the 38 (the `small` config's locked-ether, bad-randomness and
                     double-spending classes fold into `other` in `big`)
  safe            <- none of the 38 fired.
Slither renamed `arbitrary-send` to `arbitrary-send-eth` (0.8.3); RENAMED maps today's name back.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path

import compiler

DETECTORS = (
    "uninitialized-state", "constant-function-asm", "locked-ether", "incorrect-shift", "divide-before-multiply",
    "unused-return", "write-after-write", "reentrancy-no-eth", "unchecked-lowlevel", "incorrect-equality",
    "weak-prng", "arbitrary-send", "uninitialized-local", "reentrancy-eth", "shadowing-abstract",
    "controlled-delegatecall", "unchecked-transfer", "erc20-interface", "controlled-array-length", "tautology",
    "shadowing-state", "tx-origin", "unprotected-upgrade", "suicidal", "boolean-cst", "unchecked-send",
    "msg-value-loop", "erc721-interface", "constant-function-state", "delegatecall-loop", "mapping-deletion",
    "reused-constructor", "uninitialized-storage", "public-mappings-nested", "array-by-reference", "backdoor", "rtlo",
    "name-reused",
)
CLASSES = ("access-control", "arithmetic", "other", "reentrancy", "safe", "unchecked-calls")
_BY_CLASS = {
    "reentrancy": ("reentrancy-eth", "reentrancy-no-eth"),
    "access-control": ("suicidal", "arbitrary-send", "controlled-delegatecall", "tx-origin", "unprotected-upgrade",
                       "backdoor"),
    "arithmetic": ("divide-before-multiply", "incorrect-shift", "tautology"),
    "unchecked-calls": ("unchecked-lowlevel", "unchecked-send", "unchecked-transfer", "unused-return"),
}
CLASS_OF = {d: next((c for c, ds in _BY_CLASS.items() if d in ds), "other") for d in DETECTORS}
RENAMED = {"arbitrary-send-eth": "arbitrary-send"}  # Slither's name today -> the dataset's name


def classes_of(detectors) -> list[str]:
    """The `big` classes of a list of dataset detector names, sorted; ["safe"] when there are none."""
    return sorted({CLASS_OF[d] for d in detectors}) or ["safe"]


def detector_classes() -> list:
    """Slither's detector classes for the 38 checks (only these run: the others cost time and label nothing)."""
    import inspect

    from slither.detectors import all_detectors
    today = {v: k for k, v in RENAMED.items()}
    wanted = {today.get(d, d) for d in DETECTORS}
    found = [c for c in vars(all_detectors).values() if inspect.isclass(c) and getattr(c, "ARGUMENT", None) in wanted]
    missing = wanted - {c.ARGUMENT for c in found}
    if missing:
        raise compiler.CompilerError(f"this slither-analyzer lacks the detectors {sorted(missing)}; "
                                     f"install the version in requirements-vuln.txt")
    return found


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def _in_file(finding: dict, target: Path) -> bool:
    """A finding belongs to the file its first (primary) element sits in: a bug inherited from an import is
    that import's label, not this file's."""
    elements = finding.get("elements") or []
    if not elements:
        return False
    name = (elements[0].get("source_mapping") or {}).get("filename_absolute")
    return name is not None and Path(name).resolve() == target


def analyse(target, working_dir=None, include_paths=(), timeout_s: int = 180, version: str | None = None) -> dict:
    """Run the 38 detectors on one file. Returns {"status": "ok"|"compile_error"|"slither_error"|"timeout",
    "solc", "detectors" (dataset names, sorted, findings of this file only), "error" (first line), "seconds"}.
    The compiler is picked from the file's own pragma. timeout_s uses SIGALRM: call it from a main thread."""
    from crytic_compile.platform.exceptions import InvalidCompilation
    from slither import Slither

    t0 = time.time()
    working_dir = Path(working_dir or ".").resolve()
    path = (working_dir / target).resolve()
    out = {"status": "ok", "solc": None, "detectors": [], "error": None}
    try:
        out["solc"] = version or compiler.pick_version(path.read_text(encoding="utf-8"))
        solc = compiler.ensure_solc(out["solc"])
        args = " ".join(f"--include-path {p}" for p in include_paths)
        old = signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(timeout_s)
        cwd = os.getcwd()
        # crytic-compile resolves a relative source name against the process's directory before solc's, so a
        # same-named file there would be analysed instead: run from the working directory.
        os.chdir(working_dir)
        try:
            sl = Slither(str(target), solc=str(solc), solc_working_dir=str(working_dir), solc_args=args,
                         solc_disable_warnings=True)
            for d in detector_classes():
                sl.register_detector(d)
            findings = [f for per_detector in sl.run_detectors() for f in per_detector]
        finally:
            os.chdir(cwd)
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        names = {RENAMED.get(f["check"], f["check"]) for f in findings if _in_file(f, path)}
        out["detectors"] = sorted(names & set(DETECTORS))
    except _Timeout:
        out.update(status="timeout", error=f"slither took longer than {timeout_s} s")
    except InvalidCompilation as e:
        out.update(status="compile_error", error=_first_line(e))
    except SystemExit as e:  # compiler.CompilerError: a pragma no release satisfies
        out.update(status="compile_error", error=_first_line(e.code))
    except Exception as e:  # noqa: BLE001 - Slither's parser raises many kinds; the file is recorded, not fatal
        # Slither re-raises crytic-compile's InvalidCompilation as SlitherError("Invalid compilation: ...").
        status = "compile_error" if str(e).startswith("Invalid compilation") else "slither_error"
        out.update(status=status, error=f"{type(e).__name__}: {_first_line(e)}")
    out["seconds"] = round(time.time() - t0, 2)
    return out


def _first_line(e) -> str:
    """The line that says what went wrong: a compiler's `...Error: ...` line when there is one."""
    lines = [s.strip() for s in str(e).strip().splitlines() if s.strip()]
    errors = [m.group() for s in lines if (m := re.search(r"\b\w*Error: .*", s))]
    if errors:
        return errors[0][:300]
    if len(lines) > 1 and lines[0].endswith(":"):  # "Invalid compilation:" / "Unknown file: ..."
        return f"{lines[0]} {lines[1]}"[:300]
    return (lines[0] if lines else repr(e))[:300]


def quiet():
    """Slither and crytic-compile log every compile and finding at INFO; a labelling run wants only its bar."""
    for name in ("Slither", "CryticCompile", "Detectors", "Printers"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
