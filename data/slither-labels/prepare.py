"""Label the default corpus's contracts with Slither, and make vulnerable variants by bug injection, offline.

    python data/slither-labels/prepare.py [--workers 2] [--time_budget_min 0] [--inject_every 1] [--extra_every 2]
                                          [--out labels.json]

Every .sol file the default corpus keeps (data/solidity-packages: licence filter + dedup) is compiled with the
solc-js release its pragma picks (compiler/) and analysed by Slither's 38 detectors of the Hugging Face
slither-audited-smart-contracts dataset; findings outside the analysed file (inherited from an import) are dropped,
and the detectors map to the dataset's `big` classes (compiler/labels.py, README.md here). Every `inject_every`-th
file also gets one SolidiFI-style injected bug (compiler/inject.py; the base kinds take turns, and every
`extra_every`-th of those train files one extra kind too; a held-out file gets every base kind that applies) and is
analysed again: its label is whatever Slither finds, never the kind injected. An existing
labels.json made by the same labeller serves as a cache too (by sha256), so after compiler/inject.py changes only
the variants are rerun.

Split by package: packages.json's val_packages (the default corpus's val split) are `held_out`, the rest
`train`; an injected variant keeps its file's split, so no contract sits on both sides. --new_protocols labels
new_protocols.json's packages (a second test split, held-out style) and --extra_train extra_train.json's (more
classifier training files, train style, less any file that a test file copies, contains or sits in): both after the
corpus's packages, so the corpus's dedup keeps of them only their own files. Files are visited
round-robin over packages, so a run stopped by --time_budget_min still covers every package. Results are cached per
file content hash in cache/results/ (a rerun resumes), and labels.json is rewritten as work completes. The packages
are unpacked under cache/tree/<package>/node_modules/<name>, next to symlinks to the other corpus packages (the
version its package.json asks for), so npm-style imports resolve.
"""
import hashlib
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import tarfile
import time
from collections import Counter, defaultdict
from itertools import zip_longest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import compiler  # noqa: E402
from common import ArgumentParser, atomic_write  # noqa: E402
from compiler import inject, labels  # noqa: E402
from data import heldout  # noqa: E402
from data import packages as npm  # noqa: E402
from data.corpus import PrepareError  # noqa: E402

HERE = Path(__file__).resolve().parent
NEW_PROTOCOLS_FILE = HERE / "new_protocols.json"
EXTRA_TRAIN_FILE = HERE / "extra_train.json"
FORMAT = "solgpt-slither-labels-v1"


def labeller_id() -> str:
    """What the cached results depend on besides the file: a new Slither, compiler pin or mapping invalidates."""
    from importlib.metadata import version
    return json.dumps({"slither": version("slither-analyzer"), "solc": compiler.PINNED, "detectors": labels.DETECTORS,
                       "renamed": labels.RENAMED, "format": FORMAT}, sort_keys=True)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------- package tree
def stem(pkg: dict) -> str:
    return npm.tarball_name(pkg["name"], pkg["version"])[: -len(".tgz")]


def unpack(pkg: dict, tarball: Path, tree: Path) -> Path:
    """tree/<stem>/node_modules/<name>/: the package's .sol files and package.json (nothing else, no path outside)."""
    root = tree / stem(pkg) / "node_modules" / pkg["name"]
    done = root / ".unpacked"
    if done.exists():
        return root
    with tarfile.open(tarball, "r|gz") as tf:
        for m in tf:
            rel = Path(m.name).parts[1:]  # drop npm's "package/" folder
            if not m.isfile() or not rel or ".." in rel or not (m.name.endswith(".sol") or rel == ("package.json",)):
                continue
            dest = root.joinpath(*rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tf.extractfile(m).read())
    done.touch()
    return root


def wanted_ranges(root: Path) -> dict:
    """{import name: (corpus package name, npm range)} from package.json, npm aliases ("npm:pkg@range") included.
    devDependencies count: Solidity packages often list the libraries they import only there."""
    try:
        pj = json.loads((root / "package.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for section in ("devDependencies", "peerDependencies", "dependencies"):  # later sections win
        for name, rng in (pj.get(section) or {}).items():
            if not isinstance(rng, str):
                continue
            if rng.startswith("npm:") and "@" in rng[5:]:
                real, rng = rng[4:].rsplit("@", 1)
                out[name] = (real, rng)
            else:
                out[name] = (name, rng)
    return out


def pick_dependency(versions: list[str], wanted: str | None) -> str:
    """The version of a corpus package another one should import: the newest its package.json range allows, else
    the newest of the range's major version (a pin like 4.3.2 gets 4.9.6), else the first in packages.json."""
    if wanted:
        try:
            ok = [v for v in versions if any(compiler._satisfies(compiler._key(v), alt)
                                             for alt in compiler.parse_range(wanted.lstrip("v=")))]
        except (SystemExit, ValueError):
            ok = []
        major = re.search(r"\d+", wanted)
        same_major = [v for v in versions if major and v.split(".")[0] == major.group()]
        if ok or same_major:
            return max(ok or same_major, key=compiler._key)
    return versions[0]


def link_dependencies(packages: list[dict], tree: Path):
    """tree/<stem>/node_modules/<import name> -> the unpacked corpus package it names (one version per name)."""
    by_name = defaultdict(list)
    for p in packages:
        by_name[p["name"]].append(p["version"])
    for p in packages:
        wanted = wanted_ranges(tree / stem(p) / "node_modules" / p["name"])
        links = {name: (name, None) for name in by_name}
        links.update({alias: spec for alias, spec in wanted.items() if spec[0] in by_name})
        for alias, (name, rng) in links.items():
            if alias == p["name"]:
                continue
            version = pick_dependency(by_name[name], rng)
            link = tree / stem(p) / "node_modules" / alias
            target = tree / stem({"name": name, "version": version}) / "node_modules" / name
            if link.is_symlink() and os.readlink(link) == str(target):
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)


# --------------------------------------------------------------------------------------------------- jobs
def round_robin(groups: list[list]) -> list:
    return [x for row in zip_longest(*groups) for x in row if x is not None]


def make_jobs(files: list[dict], inject_every: int, extra_every: int = 2, every_kind_in=("held_out",)) -> list[dict]:
    """A clean job per file, each followed (every inject_every-th file) by one injection of inject.BASE_KINDS, kinds
    taking turns; every extra_every-th of those also gets one of inject.EXTRA_KINDS (their own turns, so the base
    kinds' assignment, and the cache, stay as before they existed). Files of the splits in every_kind_in get every
    applicable base kind instead and no extra kind (the held-out packages are mostly interfaces and libraries: the
    few contracts that can host a bug give the test split its positives; it stays the split earlier numbers used)."""
    jobs, turn = [], 0
    for i, f in enumerate(files):
        jobs.append({**f, "kind": "clean"})
        if inject_every and i % inject_every == 0:
            kinds = [k for k in inject.BASE_KINDS if inject.snippet(k, f["solc"]) is not None]
            if f.get("split") in every_kind_in:
                jobs += [{**f, "kind": k} for k in kinds]
                continue
            jobs.append({**f, "kind": kinds[turn % len(kinds)]})
            if extra_every and turn % extra_every == 0:
                extra = inject.EXTRA_KINDS[turn // extra_every % len(inject.EXTRA_KINDS)]
                jobs.append({**f, "kind": extra})
            turn += 1
    return jobs


def prepare_job(job: dict) -> dict | None:
    """Write the injected variant next to its original (relative imports keep working); None if it cannot host
    the bug. Returns the job with the analysed file's target, text hash and injection offset."""
    if job["kind"] == "clean":
        return {**job, "target": job["rel"], "sha256": sha256(job["text"])}
    made = inject.inject(job["text"], job["kind"], job["solc"])
    if made is None:
        return None
    text, offset = made
    rel = job["rel"][: -len(".sol")] + f".injected-{job['kind']}.sol"  # on disk only: the text has no marker
    (Path(job["cwd"]) / rel).write_text(text, encoding="utf-8")
    return {**job, "target": rel, "sha256": sha256(text), "offset": offset, "source_sha256": sha256(job["text"])}


def run_job(job: dict) -> tuple[dict, dict]:
    result = labels.analyse(job["target"], working_dir=job["cwd"], include_paths=[job["pkgroot"]],
                            timeout_s=job["timeout_s"], version=job["solc"])
    return job, result


def _init_worker():
    labels.quiet()


def entry(job: dict, result: dict) -> dict:
    e = {"package": job["package"], "path": job["path"], "split": job["split"], "kind": job["kind"],
         "sha256": job["sha256"], "solc": result["solc"], "status": result["status"],
         "detectors": result["detectors"], "labels": labels.classes_of(result["detectors"])
         if result["status"] == "ok" else None, "seconds": result["seconds"]}
    if result["error"]:
        e["error"] = result["error"]
    if job["kind"] != "clean":
        e.update(offset=job["offset"], source_sha256=job["source_sha256"], expected=inject.EXPECTED[job["kind"]],
                 confirmed=inject.EXPECTED[job["kind"]] in result["detectors"])
    return e


# --------------------------------------------------------------------------------------------------- output
def summarise(entries: list[dict]) -> dict:
    counts = {}
    for split in ("train", "held_out"):
        for side in ("clean", "injected"):
            es = [e for e in entries if e["split"] == split and (e["kind"] == "clean") == (side == "clean")]
            ok = [e for e in es if e["status"] == "ok"]
            counts[f"{split}/{side}"] = {"files": len(es), "labelled": len(ok),
                                         "failed": dict(Counter(e["status"] for e in es if e["status"] != "ok")),
                                         "classes": dict(sorted(Counter(c for e in ok for c in e["labels"]).items()))}
    injected = [e for e in entries if e["kind"] != "clean" and e["status"] == "ok"]
    confirmed = {k: f"{sum(e['confirmed'] for e in injected if e['kind'] == k)}/"
                    f"{sum(e['kind'] == k for e in injected)}" for k in inject.KINDS}
    secs = [e["seconds"] for e in entries if e["status"] == "ok"]
    timing = {"median_s": round(statistics.median(secs), 2), "mean_s": round(statistics.fmean(secs), 2)} if secs else {}
    return {"counts": counts, "injection_confirmed": confirmed, "seconds_per_file": timing,
            "detectors": dict(sorted(Counter(d for e in entries for d in e["detectors"]).items()))}


def write_labels(path: Path, entries: list[dict], meta: dict):
    entries = sorted(entries, key=lambda e: (e["package"], e["path"], e["kind"]))
    doc = {"format": FORMAT, **meta, **summarise(entries), "files": entries}
    # One entry per line: the file stays diff-able and small.
    body = ",\n".join(json.dumps(e, sort_keys=True) for e in entries)
    head = json.dumps({k: v for k, v in doc.items() if k != "files"}, indent=1, sort_keys=True)[:-2]
    atomic_write(path, lambda f: f.write(f'{head},\n "files": [\n{body}\n ]\n}}\n'.encode()))


# --------------------------------------------------------------------------------------------------- reading
def labelled_examples(split: str | None = None, labels_path: Path = HERE / "labels.json",
                      tarball_dir: Path = npm.TARBALL_DIR):
    """Yield {"text", "labels", "detectors", "package", "path", "kind", "split"} for every labelled (status ok)
    entry of labels.json, optionally of one split ("train" or "held_out"). Texts come from the npm tarballs (clean
    files as published; injected variants rebuilt with compiler.inject from the recorded kind and compiler), and
    each is checked against the recorded sha256, so a label never lands on different code."""
    doc = json.loads(Path(labels_path).read_text())
    by_package = defaultdict(list)
    for e in doc["files"]:
        if e["status"] == "ok" and split in (None, e["split"]):
            by_package[e["package"]].append(e)
    for package, entries in by_package.items():
        name, version = package.rsplit("@", 1)
        path = Path(tarball_dir) / npm.tarball_name(name, version)
        if not path.exists():
            raise PrepareError(f"{path} is missing: run data/solidity-packages/prepare.py (or pass the "
                                      f"folder holding the npm tarballs)")
        files = dict(npm.read_tarball(path, name)[1])
        for e in entries:
            text = files.get(e["path"])
            if text is not None and e["kind"] != "clean":
                made = inject.inject(text, e["kind"], e["solc"])
                text = made[0] if made else None
            if text is None or sha256(text) != e["sha256"]:
                raise PrepareError(f"{package} {e['path']} ({e['kind']}) does not match labels.json's sha256: "
                                          f"the tarball or compiler/inject.py changed; rerun this script")
            yield {"text": text, "labels": e["labels"], "detectors": e["detectors"], "package": package,
                   "path": e["path"], "kind": e["kind"], "split": e["split"]}


# --------------------------------------------------------------------------------------------------- main
def recorded_results(path: Path, lid: str) -> dict:
    """{sha256: result} of an existing labels.json made by this same labeller: it doubles as the cache, so a fresh
    clone (no cache/results/) reruns only what changed, e.g. injected variants after compiler/inject.py changed."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if doc.get("labeller") != json.loads(lid):
        return {}
    return {e["sha256"]: {"status": e["status"], "solc": e["solc"], "detectors": e["detectors"],
                          "error": e.get("error"), "seconds": e["seconds"]} for e in doc.get("files", [])}


def with_packages(list_file: Path, packages_file: Path, cache_dir: Path) -> Path:
    """A package list of the corpus's packages followed by list_file's (new_protocols.json, extra_train.json), the
    listed ones as its only val packages (written under cache_dir): the corpus's dedup then keeps of a listed
    package only what is its own."""
    spec = npm.load_package_list(packages_file)
    listed = json.loads(Path(list_file).read_text())["packages"]
    shared = sorted({p["name"] for p in listed} & {p["name"] for p in spec["packages"]})
    if shared:  # listed packages are told apart from the corpus's by name: one name on both sides takes them all
        raise PrepareError(f"{Path(list_file).name} lists {', '.join(shared)}, which the corpus has too: list "
                           "packages outside the corpus only")
    path = Path(cache_dir) / f"packages-{Path(list_file).stem.replace('_', '-')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {"val_packages": [p["name"] for p in listed], "packages": spec["packages"] + listed}
    atomic_write(path, lambda f: f.write(json.dumps(merged, indent=1).encode()))
    return path


def new_protocol_texts(tarball_dir: Path) -> list[str]:
    """Every file of new_protocols.json's packages, vendored ones too (a second test split's source)."""
    texts = []
    for pkg in json.loads(NEW_PROTOCOLS_FILE.read_text())["packages"]:
        texts += [t for _, t in npm.read_tarball(npm.fetch_package(pkg, tarball_dir), pkg["name"])[1] if t]
    return texts


def without_leaks(files: list[dict], references: list[str], held_out_dir: Path) -> tuple[list[dict], int, dict]:
    """files less each one that copies, nearly copies or contains a reference text or a Hub validation/test
    contract (the registry's slither-eval part, where prepared), or that a reference text contains (a library a
    test file pastes in): an extra training file must be neither what a classifier is tested or validated on nor
    hold it. Returns (kept, how many left out, what was checked: for the label file's header)."""
    registries = [heldout.Registry([({"name": "references"}, heldout.part_arrays(references))])]
    checked = {"corpus and new-protocol files": len(references)}
    hub = heldout.part_path(held_out_dir, "slither-eval")
    if heldout.read_part_info(hub) is not None:
        registries.append(heldout.Registry.from_files([hub]))
        checked["slither-eval"] = registries[-1].parts["slither-eval"].get("documents")
    else:
        checked["slither-eval"] = heldout.MISSING["slither-eval"]
        print(f"warning: held-out part slither-eval is {checked['slither-eval']}", file=sys.stderr)
    candidates = heldout.Registry([({"name": "extra"}, heldout.part_arrays([f["text"] for f in files]))])
    leaks = {i for i, f in enumerate(files) if any(r.match(f["text"]) for r in registries)}
    for text in references:
        leaks |= candidates.matching_ids(text)
    return [f for i, f in enumerate(files) if i not in leaks], len(leaks), checked


def corpus_files(args, packages, spec, tree, held_out_dir: Path | None = None) -> list[dict]:
    """The files the default corpus keeps, with where they lie unpacked, their split and compiler."""
    kept = {(src, path) for src, path, _ in npm.iter_package_documents(
        split=None, packages_file=args.packages, cache_dir=args.tarball_dir, held_out_dir=held_out_dir)}
    held = set(spec.get("val_packages", []))
    groups = []
    for pkg in packages:
        root = unpack(pkg, npm.fetch_package(pkg, args.tarball_dir), tree)
        label = f"{pkg['name']}@{pkg['version']}"
        group = []
        for src, path in sorted(k for k in kept if k[0] == label):
            rel = Path(path).relative_to("package")
            text = (root / rel).read_text(encoding="utf-8")
            try:
                solc = compiler.pick_version(text)
            except SystemExit:
                solc = None  # no release satisfies the pragma: recorded as a compile error without running
            group.append({"package": label, "path": path, "text": text, "solc": solc,
                          "split": "held_out" if pkg["name"] in held else "train",
                          "cwd": str(tree / stem(pkg)), "rel": str(Path("node_modules") / pkg["name"] / rel),
                          "pkgroot": str(root), "timeout_s": args.timeout_s})
        groups.append(group)
    return round_robin(groups)


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=Path, default=npm.PACKAGES_FILE, help="the default corpus's package list")
    p.add_argument("--tarball_dir", type=Path, default=npm.TARBALL_DIR, help="npm tarball cache (fetched if absent)")
    p.add_argument("--cache_dir", type=Path, default=HERE / "cache", help="unpacked packages and per-file results")
    p.add_argument("--held_out_dir", type=Path, default=heldout.HELD_OUT_DIR,
                   help="where the default corpus's held-out registry part lives (its dedup reads it; "
                        "--extra_train also checks against the Hub part there)")
    p.add_argument("--out", type=Path, help="default: labels.json (labels_new_protocols.json with --new_protocols, "
                                            "labels_extra_train.json with --extra_train)")
    p.add_argument("--new_protocols", action="store_true",
                   help="label new_protocols.json's packages only (a second test split: every base kind injected)")
    p.add_argument("--extra_train", action="store_true",
                   help="label extra_train.json's packages only (more classifier training files: labels_extra_train.json)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--inject_every", type=int, default=1, help="inject a bug into every n-th file (0: none)")
    p.add_argument("--extra_every", type=int, default=2,
                   help="every n-th injected train file also gets a bug of inject.EXTRA_KINDS (0: none)")
    p.add_argument("--time_budget_min", type=float, default=0, help="stop starting new files after this (0: none)")
    p.add_argument("--max_files", type=int, default=0, help="label only the first n files of the round-robin (0: all)")
    p.add_argument("--timeout_s", type=int, default=90, help="give up on one file after this")
    p.add_argument("--retry_failed", action="store_true", help="rerun files whose cached result is a failure")
    args = p.parse_args(argv)
    if args.workers < 1 or args.inject_every < 0 or args.extra_every < 0 or args.timeout_s < 1:
        p.error("--workers and --timeout_s must be >= 1, --inject_every and --extra_every >= 0")
    from tqdm import tqdm
    try:
        labels.detector_classes()  # fails here, once, rather than in every worker
    except ImportError:
        raise PrepareError("slither-analyzer is not installed: pip install -r requirements-vuln.txt "
                                  "torch==2.13.0") from None

    t0 = time.time()
    held_out_dir = args.held_out_dir
    if args.new_protocols and args.extra_train:
        p.error("--new_protocols and --extra_train label different package lists: run them one at a time")
    listed = NEW_PROTOCOLS_FILE if args.new_protocols else EXTRA_TRAIN_FILE if args.extra_train else None
    if listed:  # the corpus stays the dedup reference and the dependencies; the merged list's registry part
        # has its own folder, so the corpus's is not rebuilt for it
        args.packages = with_packages(listed, args.packages, args.cache_dir)
        held_out_dir = args.cache_dir / f"held-out-{listed.stem.replace('_', '-')}"
    args.out = args.out or HERE / (f"labels_{listed.stem}.json" if listed else "labels.json")
    spec = npm.load_package_list(args.packages)
    packages = npm.ordered_packages(spec)
    tree, results = args.cache_dir / "tree", args.cache_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    files = corpus_files(args, packages, spec, tree, held_out_dir)
    link_dependencies(packages, tree)
    if listed:  # in the merged list the corpus's packages are the train side, the listed ones held_out
        corpus_texts = [f["text"] for f in files if f["split"] == "train"]
        files = [f for f in files if f["split"] == "held_out"]
    if args.extra_train:
        # an extra training file must not be, hold or sit in a corpus file (its val packages are the held-out test
        # split; validation is picked from its train side when a classifier trains) or a new-protocol file
        references = corpus_texts + new_protocol_texts(args.tarball_dir)
        files, leaks, checked = without_leaks(files, references, args.held_out_dir)
        files = [{**f, "split": "train"} for f in files]
        print(f"extra train files: left out {leaks} that copy, contain or sit inside a corpus or test file")
    if args.max_files:
        files = files[: args.max_files]
    for v in sorted({f["solc"] for f in files if f["solc"]}, key=compiler._key):
        compiler.ensure_solc(v)  # install before the pool starts, not once per worker
    lid = labeller_id()
    key = lambda job: hashlib.sha256((lid + "\0" + job["sha256"]).encode()).hexdigest()  # noqa: E731
    planned = make_jobs([f for f in files if f["solc"]], args.inject_every, args.extra_every)
    jobs = [j for j in map(prepare_job, planned) if j]
    # One entry per (package, path, kind); a rerun's result replaces a cached failure it retries.
    done = {(f["package"], f["path"], "clean"): entry({**f, "kind": "clean", "sha256": sha256(f["text"])},
                                                      {"status": "compile_error", "solc": None, "detectors": [],
                                                       "seconds": 0, "error": "no solc-js release satisfies the pragma"})
            for f in files if not f["solc"]}
    recorded = recorded_results(args.out, lid)
    retry, todo = [], []
    for job in jobs:
        cached = results / f"{key(job)}.json"
        result = json.loads(cached.read_text()) if cached.exists() else recorded.get(job["sha256"])
        if result is not None:
            done[(job["package"], job["path"], job["kind"])] = entry(job, result)
            if args.retry_failed and result["status"] != "ok":
                retry.append(job)
        else:
            todo.append(job)
    todo = retry + todo  # retried failures first, so a short --time_budget_min still gets to them
    meta = {"labeller": json.loads(lid), "classes": list(labels.CLASSES), "class_of_detector": labels.CLASS_OF,
            "split": {"by": "package", "held_out_packages": [] if args.extra_train else spec.get("val_packages", [])},
            "corpus_files": len(files), "injection_kinds": list(inject.KINDS)}
    if args.extra_train:
        meta["left_out_as_leaks"] = {"files": leaks, "checked_against": checked}
    kind = "new-protocol" if args.new_protocols else "extra train" if args.extra_train else "corpus"
    print(f"{len(files)} {kind} files, {len(jobs)} jobs ({len(jobs) - len(todo) + len(retry)} cached, "
          f"{len(retry)} of them failures to retry), "
          f"{args.workers} workers, setup {time.time() - t0:.0f} s")
    stopped = False
    with mp.get_context("fork").Pool(args.workers, initializer=_init_worker) as pool, \
            tqdm(total=len(todo), desc="slither", unit="file") as bar:
        for n, (job, result) in enumerate(pool.imap_unordered(run_job, todo), 1):
            atomic_write(results / f"{key(job)}.json", lambda f, r=result: f.write(json.dumps(r).encode()))
            done[(job["package"], job["path"], job["kind"])] = entry(job, result)
            bar.update()
            bar.set_postfix(ok=sum(e["status"] == "ok" for e in done.values()), refresh=False)
            if n % 50 == 0:
                write_labels(args.out, list(done.values()), meta)
            if args.time_budget_min and time.time() - t0 > 60 * args.time_budget_min:
                stopped = True
                pool.terminate()
                break
    entries = list(done.values())
    write_labels(args.out, entries, meta)
    s = summarise(entries)
    print(json.dumps({"counts": s["counts"], "injection_confirmed": s["injection_confirmed"],
                      "seconds_per_file": s["seconds_per_file"]}, indent=1))
    print(f"wrote {args.out} ({len(entries)} entries) in {time.time() - t0:.0f} s"
          + (" -- stopped by --time_budget_min; rerun to continue from the cache" if stopped else ""))


if __name__ == "__main__":
    main()
