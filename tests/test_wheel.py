"""The wheel works on its own: built from the sources, installed non-editable into a fresh venv (no network),
it lists the environments from its own task data and builds the data sets from its own SQL."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "retro", "flows", "datasets")


def run(*args: str | Path, cwd: Path, home: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "HF_HUB_OFFLINE": "1"}
    if home is not None:
        env["RETRO_HOME"] = str(home)
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_installed_elsewhere_lists_environments_and_builds_data_sets(tmp_path):
    # 1. build from a clean copy (a stale build/ in the checkout could add files the sources no longer have)
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "dist", src, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("retroformer-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"retro/_datasets/{p.relative_to(src / 'datasets').as_posix()}"
                for p in (src / "datasets").rglob("*") if p.is_file()}
    expected |= {p.relative_to(src).as_posix() for name in ("retro", "flows")
                 for p in (src / name).rglob("*") if p.suffix in (".py", ".sql")}
    assert not expected - shipped, f"left out of the wheel (pyproject.toml packages): {sorted(expected - shipped)}"
    assert not any(name.startswith("datasets/") for name in shipped)  # never a top-level `datasets`

    # 2. a fresh venv whose dependencies are this one's (a .pth line: that folder's own .pth files, the
    #    editable install among them, are not run), with the wheel installed into it, not editable
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=tmp_path)
    (fresh_site,) = venv.glob("lib/python3.*/site-packages")
    (fresh_site / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
        "-q", wheel, cwd=tmp_path)
    where = run(venv / "bin" / "python", "-c", "import retro; print(retro.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(fresh_site)

    # 3. the installed command, outside the checkout, on an empty home
    home = tmp_path / "home"
    listed = run(venv / "bin" / "retro", "envs", "list", "--json", cwd=tmp_path, home=home)
    rows = json.loads(listed.splitlines()[-1])
    counts = {(r["env"], r["split"]): r["tasks"] for r in rows if r["status"] == "ok"}
    assert counts[("hotpotqa", "eval")] == 100 and counts[("webshop", "eval")] == 100
    assert counts[("alfworld", "valid_unseen")] > 0
    built = run(venv / "bin" / "retro", "train", "build-datasets", "--json", cwd=tmp_path, home=home)
    versions = {row["dataset"]: row["rows"] for row in json.loads(built.splitlines()[-1])}
    assert set(versions) == {"sft", "reward", "reward_pairs", "ppo", "replay"}
    assert not any(versions.values())  # an empty lake: every set built, with no rows


def test_the_top_level_datasets_folder_never_shadows_hugging_face_datasets():
    # run from the checkout's root, where the folder `datasets/` is first on sys.path ('')
    found = run(sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('datasets').origin)",
                cwd=ROOT)
    assert Path(found.strip()).is_relative_to(Path(site.getsitepackages()[0])), found
