"""The openclipart Debian packages as a source of real captioned images (used by build_demo_shards.py).

Gets openclipart-png and openclipart-svg without installing them (`apt-get download`, or .deb
files already at hand), unpacks them with `dpkg-deb -x`, and indexes every PNG with its sha256,
size, category (first folder) and caption (the matching SVG's dc:title, else one made from the
file name). Standalone: stdlib only, no ShardGuard imports.
"""
from __future__ import annotations

import glob, hashlib, os, re, shutil, subprocess, sys, time
import xml.etree.ElementTree as ET

PACKAGES = ("openclipart-png", "openclipart-svg")
PNG_SUB, SVG_SUB = "usr/share/openclipart/png", "usr/share/openclipart/svg"
DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"
T0 = time.time()


def log(msg: str) -> None:
    print(f"[demo {time.time() - T0:6.1f}s] {msg}", flush=True)


def die(msg: str) -> None:
    sys.exit(f"build_demo_shards: error: {msg}")


def fetch_debs(work: str, debs_dir: str | None) -> dict[str, str]:
    """Return {package: .deb path}, downloading with ``apt-get download`` if needed."""
    src = debs_dir or os.path.join(work, "debs")
    os.makedirs(src, exist_ok=True)
    found = lambda: {p: sorted(glob.glob(os.path.join(src, f"{p}_*.deb")))[-1:] for p in PACKAGES}
    debs = found()
    if debs_dir and not all(debs.values()):
        die(f"--debs-dir {debs_dir} lacks {[p for p, d in debs.items() if not d]} (.deb files)")
    if not all(debs.values()):
        if not shutil.which("apt-get"):
            die("apt-get not found: run on Debian/Ubuntu or pass --debs-dir with "
                "openclipart-png_*.deb and openclipart-svg_*.deb")
        log(f"apt-get download {' '.join(PACKAGES)} -> {src}")
        cmd = ["apt-get", "download", *PACKAGES]
        res = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
        if res.returncode != 0 and os.geteuid() == 0:
            log("apt-get download failed; running apt-get update (we are root) and retrying")
            subprocess.run(["apt-get", "update"], capture_output=True)
            res = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
        if res.returncode != 0:
            die(f"apt-get download failed:\n{res.stderr.strip()}\nIf the package lists are "
                "missing, run `sudo apt-get update` first (or pass --debs-dir).")
        debs = found()
    return {p: d[0] for p, d in debs.items()}


def extract(debs: dict[str, str], work: str) -> str:
    """dpkg-deb -x every .deb into work/root (cached by a marker file)."""
    if not shutil.which("dpkg-deb"):
        die("dpkg-deb not found (package dpkg); it is needed to unpack the .deb files")
    root = os.path.join(work, "root")
    marker = os.path.join(root, ".extracted-" + hashlib.sha1(
        "|".join(os.path.basename(d) for d in debs.values()).encode()).hexdigest()[:12])
    if not os.path.exists(marker):
        shutil.rmtree(root, ignore_errors=True)
        for deb in debs.values():
            log(f"dpkg-deb -x {os.path.basename(deb)}")
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        open(marker, "w").close()
    return root


def deb_field(deb: str, field: str) -> str:
    """A control field of a .deb (dpkg-deb -f)."""
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True,
                          text=True).stdout.strip()


def svg_title(path: str) -> str | None:
    """dc:title of the SVG's cc:Work (not the creator/publisher Agent titles)."""
    try:
        for _, el in ET.iterparse(path, events=("end",)):
            if el.tag.rsplit("}", 1)[-1] == "Work":  # cc ns varies between files
                title = el.find(DC_TITLE)
                text = " ".join((title.text or "").split()) if title is not None else ""
                return text or None
            if el.tag.rsplit("}", 1)[-1] == "metadata":
                return None
    except (ET.ParseError, OSError, UnicodeError):
        return None
    return None


def name_caption(rel: str) -> str:
    """Fallback caption: 'foo_bar_baz_01.png' -> 'foo bar baz'."""
    stem = os.path.splitext(os.path.basename(rel))[0]
    stem = re.sub(r"[_-]+\d*$", "", stem) or stem
    return " ".join(re.split(r"[_\-\s]+", stem)).strip()


def index(root: str, max_pixels: int) -> tuple[list[dict], int]:
    """One record per PNG (symlinks included, read through) with sha256 and caption."""
    png_root, svg_root = os.path.join(root, PNG_SUB), os.path.join(root, SVG_SUB)
    if not os.path.isdir(png_root):
        die(f"{png_root} missing: is this really openclipart-png?")
    entries, skipped = [], 0
    for d, dirs, files in os.walk(png_root):
        dirs.sort()
        for f in sorted(files):
            rel = os.path.relpath(os.path.join(d, f), png_root)
            if not f.lower().endswith(".png") or os.sep not in rel:
                continue
            with open(os.path.join(png_root, rel), "rb") as fh:
                data = fh.read()
            w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
            if w * h > max_pixels:
                skipped += 1
                continue
            title = svg_title(os.path.join(svg_root, rel[:-4] + ".svg"))
            entries.append(dict(
                rel=rel, category=rel.split(os.sep)[0], sha256=hashlib.sha256(data).hexdigest(),
                caption=title or name_caption(rel),
                caption_source="svg_dc_title" if title else "file_name"))
    return entries, skipped
