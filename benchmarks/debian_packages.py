"""Debian packages as benchmark data: fetched with `apt-get download`, unpacked with `dpkg-deb -x`,
cached, never installed and never committed (the photo, icon and font sets use it).

Input: a package name, the folder its .deb is kept in and the folder to unpack it into. Output:
that folder (a `.unpacked` marker, written last, makes later calls free). Failure: RuntimeError
naming the package when apt-get download or dpkg-deb fails (run `apt-get update`, or put the
.deb in the debs folder by hand).
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path


def unpacked(package: str, debs: Path, root: Path) -> Path:
    if (root / ".unpacked").exists():
        return root
    debs.mkdir(parents=True, exist_ok=True)
    if not glob.glob(str(debs / f"{package}_*.deb")):
        res = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed (run apt-get update?): {res.stderr.strip()}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    res = subprocess.run(["dpkg-deb", "-x", sorted(glob.glob(str(debs / f"{package}_*.deb")))[-1], str(root)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x failed for {package}: {res.stderr.strip()}")
    (root / ".unpacked").touch()
    return root
