"""Pack the Python packages a bare CUDA machine lacks into one archive it can unpack offline.

    .venv/bin/python infra/device/pack_site.py [--out .gpucarry/site.tar.xz]

Input: this checkout's .venv (made by `make venv`). Output: an xz tar of the distributions in
CARRY, copied from .venv's site-packages, with their tests, type stubs and __pycache__ left out
and the debug symbols of their shared objects stripped (apache-beam's Cython modules ship them:
96 MB -> 18 MB). infra/device/gpu_checks.sh unpacks it into /tmp/site and puts that on
PYTHONPATH. CARRY is what the GPU checks import that the device image (PyTorch, torchvision,
transformers, pyarrow, numpy, pandas, matplotlib, opencv, scikit-learn, pytest, hypothesis ...;
see the device tool's KINDS.md) does not have; found by running the checks with only the image's
packages on the path and adding what was missing. x86-64, CPython 3.12 only, like the image.
Failure: exit 1 naming a distribution that is not installed in .venv.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRY = ["apache-beam", "duckdb", "faiss-cpu", "open_clip_torch", "diffusers", "mlxtend", "fastavro", "objsize",
         "httplib2", "zstandard", "cryptography", "cffi", "proto-plus", "pytz", "beartype", "braceexpand", "ftfy",
         "wcwidth", "httpx2", "httpcore2", "truststore", "importlib-metadata"]
SKIP_PARTS = {"__pycache__", "tests", "testing"}


def site_packages() -> Path:
    found = sorted((REPO / ".venv" / "lib").glob("python3.*/site-packages"))
    if not found:
        sys.exit("no .venv: run `make venv` first")
    return found[0]


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def keep(rel: Path) -> bool:
    return not (SKIP_PARTS & set(rel.parts[:-1]) or rel.name.endswith(("_test.py", ".pyi"))
                or rel.parts[0].endswith("-stubs") or rel.parts[0] == "..")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / ".gpucarry" / "site.tar.xz")
    args = ap.parse_args()
    sp = site_packages()
    installed = {norm(d.metadata["Name"]): d for d in md.distributions(path=[str(sp)])}
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp)
        for name in CARRY:
            dist = installed.get(norm(name))
            if dist is None:
                sys.exit(f"{name} is not installed in {sp}")
            for f in dist.files or []:
                src = sp / f
                if keep(Path(f)) and src.is_file():
                    dst = stage / f
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
                    if ".so" in dst.name:
                        subprocess.run(["strip", "--strip-debug", str(dst)], check=False)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(stage, arcname=".")
        part = args.out.with_suffix(".part")
        subprocess.run(["xz", "-6", "-T0"], input=buf.getvalue(), stdout=open(part, "wb"), check=True)
        part.replace(args.out)
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.1f} MiB, {len(CARRY)} distributions")


if __name__ == "__main__":
    main()
