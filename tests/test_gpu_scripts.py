"""The GPU scripts stay alive without a GPU: the pack's slimmed wheels and its size limit, the
architectures the GPU check builds, and benchmarks/gpu/check.py's whole path on the tiny model."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmarks.bench_grpo import ratios
from benchmarks.gpu import check, pack
from benchmarks.gpu.measure import run_child
from benchmarks.gpu.random_models import parameter_count
from tests.conftest import REPO

MIB = 1024 * 1024


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel(folder: Path, files: dict[str, bytes], name: str = "demo") -> Path:
    """A real wheel (zip with METADATA, WHEEL and a RECORD of sha256 hashes) of package `name`."""
    info = f"{name}-1.0.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "\n".join([_record_line(n, d) for n, d in files.items()] + [f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", record)
    return path


def test_slimmed_wheel_keeps_valid_record_and_installs(tmp_path):
    src = _wheel(tmp_path, {"demo/__init__.py": b"VALUE = 1\n", "demo/studio/app.js": b"x" * 5000,
                            "demo/libdemo_cuda128.so": b"\0" * 3000, "demo/libdemo_cuda130.so": b"\1" * 3000})
    out = tmp_path / "out"
    out.mkdir()
    dst = out / src.name
    dropped = pack.rezip_wheel(src, dst, lambda n: "/studio/" in n or n.endswith("cuda128.so"))
    assert sorted(dropped) == ["demo/libdemo_cuda128.so", "demo/studio/app.js"]
    assert pack.record_problems(dst) == []
    with zipfile.ZipFile(dst) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}  # for the outer xz
        assert "studio" not in z.read("demo-1.0.dist-info/RECORD").decode()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--disable-pip-version-check", "--target", str(target), str(dst)], check=True)
    assert (target / "demo" / "libdemo_cuda130.so").read_bytes() == b"\1" * 3000
    assert not (target / "demo" / "studio").exists() and not (target / "demo" / "libdemo_cuda128.so").exists()


def test_record_problems_finds_a_changed_file(tmp_path):
    src = _wheel(tmp_path, {"demo/__init__.py": b"VALUE = 1\n"})
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, b"VALUE = 2\n" if info.filename == "demo/__init__.py" else zin.read(info))
    assert pack.record_problems(bad) == ["demo/__init__.py: hash or size differs"]


def test_slimming_rules_keep_what_the_gpu_run_loads():
    keep_bnb = [n for n in ("bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cuda128.so",
                            "bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/functional.py")
                if not pack.SLIM["bitsandbytes"](n)]
    assert keep_bnb == ["bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/functional.py"]
    assert pack.SLIM["unsloth"]("studio/backend/app.py") and not pack.SLIM["unsloth"]("unsloth/models/llama.py")


def _git_repo(root: Path, tracked: int, untracked: int) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("/.gpu-pack/\n")
    (root / "tracked.bin").write_bytes(b"t" * tracked)
    subprocess.run(["git", "-C", str(root), "add", "tracked.bin", ".gitignore"], check=True)
    (root / "untracked.bin").write_bytes(b"u" * untracked)  # not ignored: it travels too
    return root


def test_size_limit_counts_tracked_untracked_and_pack(tmp_path):
    repo = _git_repo(tmp_path / "repo", MIB, MIB // 2)
    folder = repo / ".gpu-pack"
    folder.mkdir()
    (folder / "pack.tar.xz").write_bytes(b"p" * (2 * MIB))
    tree, packed, error = pack.carried_size(repo, folder, limit_mib=4)
    assert packed == 2 * MIB and tree == MIB + MIB // 2 + len("/.gpu-pack/\n")
    assert error is None
    _, _, error = pack.carried_size(repo, folder, limit_mib=3)
    assert error is not None and "exceeds 3 MiB by 0.5 MiB" in error


def test_pack_size_only_fails_over_the_limit(tmp_path, capsys):
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "pack.tar.xz").write_bytes(b"p" * (2 * MIB))
    assert pack.main(["--size-only", "--pack", str(folder), "--limit-mib", "64"]) == 0
    assert pack.main(["--size-only", "--pack", str(folder), "--limit-mib", "1"]) == 1
    assert "exceeds 1 MiB" in capsys.readouterr().err


def test_architectures_have_the_published_sizes():
    """Qwen2.5-0.5B: 0.49B parameters (0.36B without embeddings); Qwen2.5-3B: 3.09B (2.77B)."""
    embed = 151936
    assert parameter_count("qwen2.5-0.5b") == 494_032_768
    assert parameter_count("qwen2.5-0.5b") - embed * 896 == 357_898_112
    assert parameter_count("qwen2.5-3b") == 3_085_938_688
    assert parameter_count("qwen2.5-3b") - embed * 2048 == 2_774_773_760


def test_child_timeout_and_crash_come_back_as_errors(tmp_path):
    result = tmp_path / "r.json"
    slow = run_child([sys.executable, "-c", "import time; time.sleep(30)"], result, timeout_s=1)
    assert slow["error"].startswith("timed out after 1 s")
    crash = run_child([sys.executable, "-c", "raise SystemExit(3)"], result, timeout_s=30)
    assert crash["error"] == "exit 3"
    done = run_child([sys.executable, "-c", f"open({str(result)!r}, 'w').write('{{\"ok\": 1}}')"], result, timeout_s=30)
    assert done == {"ok": 1}


def test_ratios_say_which_side_is_ahead():
    unsloth = {"grpo": {"mean_step_s": 2.0, "grpo_completion_tokens_per_s": 300.0}, "generation": {"tokens_per_s": 90.0},
               "train_memory": {"peak_reserved_mib": 5000}}
    plain = {"grpo": {"mean_step_s": 5.0, "grpo_completion_tokens_per_s": 120.0}, "generation": {"tokens_per_s": 30.0},
             "train_memory": {"peak_reserved_mib": 9000}}
    assert ratios(unsloth, plain) == {"step_time_plain_over_unsloth": 2.5, "train_tokens_per_s_unsloth_over_plain": 2.5,
                                      "generate_tokens_per_s_unsloth_over_plain": 3.0,
                                      "train_peak_memory_plain_over_unsloth": 1.8}


def _pack_tokenizers(tiny_model_dir: Path, root: Path) -> Path:
    """A pack's tokenizers/ folder: SmolLM2's files, as pack.py writes them."""
    folder = root / "tokenizers" / "smollm2"
    folder.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, folder / f.name)
    return folder.parent


def test_check_runs_the_kit_path_on_cpu(tmp_path, tiny_model_dir):
    """check.py's own path (build, kit.train.run, save, reload, generate, measure) on the tiny model,
    with the T4 recipe's shape of batch: micro-batch 2 x accumulation 2, one generation batch of 4.
    In 16-bit: bitsandbytes' CPU 4-bit kernels triple the step time here; `check.py --device cpu
    --tiny` (4-bit, as on a GPU) is the same code with one override less."""
    tokenizers = _pack_tokenizers(tiny_model_dir, tmp_path)
    extra = ["grpo.per_device_train_batch_size=2", "grpo.gradient_accumulation_steps=2",
             "grpo.generation_batch_size=4", "grpo.max_completion_length=8", "data.review_chars=20",
             "data.description_chars=0", "model.load_in_4bit=false"]
    res = check.run_one("tiny", "cpu", steps=1, recipe="smoke", work=tmp_path / "work", extra=extra,
                        pack=tokenizers, gen_tokens=4, tiny=True)
    json.dumps(res)  # the report is JSON as printed
    assert res["grpo"]["steps_done"] == 1
    ran = res["trainer_ran_with"]
    assert (ran["per_device_train_batch_size"], ran["gradient_accumulation_steps"], ran["generation_batch_size"],
            ran["steps_per_generation"]) == (2, 2, 4, 2)
    assert res["settings"]["load_in_4bit"] is False and res["settings"]["max_completion_length"] == 8
    assert res["adapter"]["lora_B_total"] > 0 and res["adapter_attached"].startswith("PeftModel")
    gen = res["generation"]
    assert gen["sequences"] == res["prompts"]["n"] == 2
    assert 0 < gen["tokens"] <= 2 * 4 and gen["tokens_per_s"] > 0
    assert res["train_memory"]["peak_rss_mib"] > 0 and res["generation_backend"] == "transformers generate"



def test_the_notebook_runner_runs_the_reczero_notebook(tmp_path, tiny_model_dir):
    """benchmarks/gpu/notebook.py, as `check.sh notebook` runs it on a GPU machine: the tiny model
    built from the pack's tokenizer into an empty cache, every cell of the RecZero notebook run in
    one process, and a report of where the model sat and what the notebook left."""

    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env.update(KIT_CACHE=str(tmp_path / "empty-cache"), CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    report = tmp_path / "notebook_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu/notebook.py", "--work", str(tmp_path / "work"),
                           "--pack", str(_pack_tokenizers(tiny_model_dir, tmp_path)), "--json", str(report)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert doc["tiny_model"].startswith("built from the pack's tokenizer")
    assert doc["all_cells_ran"] and [c["cell"] for c in doc["cells"]] == list(range(1, 10))
    assert [m["device"] for m in doc["models"]] == ["cpu"] and doc["unsloth_imported"]
    assert {"reczero-music/adapter/adapter_model.safetensors", "reczero-music/rewards.png",
            "reczero-music/eval/test/confusion.png", "reczero-music-merged/model.safetensors"} <= set(doc["files"])
    assert doc["test_metrics"]["run"] == "reczero-music" and doc["test_metrics"]["n"] > 0


def test_the_notebook_runner_stops_first_on_a_missing_package(tmp_path, monkeypatch):
    """A machine without one of the notebook's packages gets their pip names, before anything runs."""
    from benchmarks.gpu import notebook

    monkeypatch.setenv("UNSLOTH_FORCE_CPU", "1")  # what the runner sets for a CPU run, restored after
    monkeypatch.setitem(notebook.NEEDED, "no_such_module_here", "no-such-package")
    report = tmp_path / "r.json"
    code = notebook.main(["--work", str(tmp_path / "work"), "--device", "cpu", "--json", str(report)])
    doc = json.loads(report.read_text())
    assert code == 2 and doc["missing"] == ["no-such-package"] and "cells" not in doc
    assert not (tmp_path / "work").exists()


def _part(root: Path, package: str, tokenizers: bool) -> Path:
    """A carried pack folder as pack.py writes it: pack.tar.xz holding wheels/ (and tokenizers/)."""
    import tarfile

    staging = root / f"staging-{package}"
    (staging / "wheels").mkdir(parents=True)
    _wheel(staging / "wheels", {f"{package}/__init__.py": b"VALUE = 1\n"}, name=package)
    if tokenizers:
        (staging / "tokenizers" / "smollm2").mkdir(parents=True)
        (staging / "tokenizers" / "smollm2" / "tokenizer.json").write_text("{}")
    folder = root / f"pack-{package}"
    folder.mkdir()
    with tarfile.open(folder / "pack.tar.xz", "w:xz") as tar:
        for sub in sorted(staging.iterdir()):
            tar.add(sub, arcname=sub.name)
    return folder


def test_check_sh_installs_each_carried_part_once(tmp_path):
    """`check.sh install`: the training part, then the notebook part carried in a later run on the
    same machine: its wheels join the first part's in one folder, and nothing installs twice."""
    train, notebook = _part(tmp_path, "kit_part_a", True), _part(tmp_path, "kit_part_b", False)
    work = tmp_path / "work"

    def install(packs: list[Path], code: int = 0) -> str:
        env = dict(os.environ, PACK=" ".join(map(str, packs)), PYTHON=sys.executable, KIT_GPU_WORK=str(work))
        proc = subprocess.run(["bash", "benchmarks/gpu/check.sh", "install"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == code, proc.stderr[-2000:]
        return proc.stdout + proc.stderr

    assert "no pack.tar.xz in" in install([tmp_path / "nothing-carried"], code=2)

    first = install([train])
    assert f"installed 1 wheels of {train}" in first
    later = install([train, notebook])
    assert f"installed 1 wheels of {notebook}" in later and f"of {train}" not in later
    assert {p.name for p in (work / "site").iterdir() if not p.name.startswith(".")} >= {"kit_part_a", "kit_part_b"}
    assert (work / "unpacked" / train.name / "tokenizers" / "smollm2" / "tokenizer.json").is_file()
    assert "installed" not in install([train, notebook])
