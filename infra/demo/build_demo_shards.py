"""Build LAION-style demo webdataset shards from real public-domain clipart.

Standalone (stdlib + pyarrow + img2dataset; no ShardGuard imports). Steps:

1. ``apt-get download openclipart-png openclipart-svg`` (Debian, public domain)
   into the work dir -- nothing is installed -- and ``dpkg-deb -x`` them.
   ``--debs-dir`` reuses already downloaded .deb files, ``--work DIR`` caches
   downloads/extraction between runs (default: a temp dir, deleted at the end).
2. Index every PNG under usr/share/openclipart/png/<category>/..., hash it
   (sha256) and caption it with the dc:title of the matching SVG (fallback:
   a caption derived from the file name; see the ``caption_source`` column).
3. Select ``--count`` images (seed ``--seed``): whole groups of the package's
   real exact duplicates (identical PNG bytes; Debian ships most as symlinks,
   served as separate files), then near duplicates (same specific dc:title,
   different bytes), then a category-stratified fill. PNGs over
   ``--max-pixels`` are skipped: img2dataset's alpha matting makes float64
   full-size copies (a 600 Mpx poster would need >15 GB of RAM).
4. Write a URL-list parquet (url, caption, category, source_path, caption_source,
   source_sha256), url = http://127.0.0.1:PORT/<quoted png path>, serve the
   unmodified PNG tree with ``python -m http.server`` (stopped by pid) and run
   the real ``img2dataset.download`` -> NNNNN.tar (key.jpg/.txt/.json),
   NNNNN.parquet, NNNNN_stats.json, copied to ``--out`` with a README.md.
   img2dataset alpha-mats transparent PNGs onto WHITE itself (no pre-flattening).
   resize_mode keep_ratio_largest: longest side -> 256, no padding, so every
   image is <= 256x256 (keep_ratio would scale the SHORTEST side to 256).

Committed sample (about 1000 images, 4 shards, < 15 MB)::

    .venv/bin/python infra/demo/build_demo_shards.py --out infra/demo/sample \\
        --count 1000 --shard-size 250

Bigger runs: ``--count 0`` takes every indexed image (~8100 in 0.18+dfsg-19),
e.g. ``--count 0 --shard-size 1000 --work /tmp/oc --out /tmp/oc-shards``.
"""
from __future__ import annotations

import argparse, collections, contextlib, glob, hashlib, json, os, random, re
import shlex, shutil, socket, subprocess, sys, tarfile, tempfile, time
import urllib.parse, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from openclipart_package import (PNG_SUB, T0, deb_field, die, extract, fetch_debs,  # noqa: E402
                                 index, log)

SHARD_FILE = re.compile(r"\d+(\.tar|\.parquet|_stats\.json)")


def select(entries: list[dict], count: int, seed: int, dup_frac: float,
           near_frac: float, max_group: int) -> list[dict]:
    """Deterministic selection: duplicate groups first, then a stratified fill."""
    rng = random.Random(seed)
    if count <= 0 or count >= len(entries):
        chosen = list(entries)
    else:
        by_sha, by_title = collections.defaultdict(list), collections.defaultdict(dict)
        for e in entries:
            by_sha[e["sha256"]].append(e)
            if e["caption_source"] == "svg_dc_title":
                by_title[e["caption"].lower()].setdefault(e["sha256"], e)
        exact = [g for g in by_sha.values() if len(g) > 1]
        # near duplicates: a *specific* title (2-3 distinct images) shared by different bytes;
        # generic collection titles ("Etiquette Icons", 400+ images) are not near duplicates
        near = [list(g.values()) for g in by_title.values() if 2 <= len(g) <= 3]
        picked: dict[str, dict] = {}
        for groups, budget in ((exact, int(count * dup_frac)), (near, int(count * near_frac))):
            rng.shuffle(groups)
            used = 0
            for g in groups:
                g = rng.sample(g, max_group) if len(g) > max_group else g
                new = [e for e in g if e["rel"] not in picked]
                if len(new) >= 2 and used + len(new) <= budget:
                    picked.update((e["rel"], e) for e in new)
                    used += len(new)
        by_cat = collections.defaultdict(list)
        for e in entries:
            if e["rel"] not in picked:
                by_cat[e["category"]].append(e)
        keyed = []  # proportional stratification: interleave shuffled categories by rank/size
        for cat in sorted(by_cat):
            rest = by_cat[cat]
            rng.shuffle(rest)
            keyed += [((i + rng.random()) / len(rest) if i else -1.0, e["rel"], e)
                      for i, e in enumerate(rest)]  # rank 0: every category is represented
        keyed.sort(key=lambda k: k[:2])
        chosen = list(picked.values()) + [k[2] for k in keyed[: count - len(picked)]]
    rng.shuffle(chosen)  # spread duplicate groups over shards, like a real crawl
    return chosen


def dup_groups(keys) -> int:
    """Number of values that occur more than once."""
    return sum(1 for n in collections.Counter(keys).values() if n > 1)


def near_groups(rows: list[dict]) -> int:
    """Specific dc:titles (2-3 distinct images) shared by >= 2 different PNGs."""
    shas = collections.defaultdict(set)
    for r in rows:
        if r["caption_source"] == "svg_dc_title":
            shas[r["caption"].lower()].add(r["sha256"])
    return sum(1 for s in shas.values() if 2 <= len(s) <= 3)


@contextlib.contextmanager
def serve(directory: str, logfile: str):
    """Serve directory on 127.0.0.1:<free port> in a subprocess; always stop it by pid."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(logfile, "w") as lf:
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                 str(port), "--directory", directory], stdout=lf, stderr=lf)
    log(f"http.server pid {proc.pid} serving {directory} on 127.0.0.1:{port}")
    try:
        for _ in range(100):
            if proc.poll() is not None:
                die(f"http.server exited with {proc.returncode}; see {logfile}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            die("http.server did not answer within 10 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log(f"http.server pid {proc.pid} stopped")


def write_url_list(rows: list[dict], port: int, path: str) -> None:
    """img2dataset input: one row per selected PNG, url on the local server."""
    import pyarrow as pa, pyarrow.parquet as pq
    pq.write_table(pa.table({
        "url": [f"http://127.0.0.1:{port}/" + urllib.parse.quote(r["rel"]) for r in rows],
        "caption": [r["caption"] for r in rows], "category": [r["category"] for r in rows],
        "source_path": [f"/{PNG_SUB}/{r['rel']}" for r in rows],
        "caption_source": [r["caption_source"] for r in rows],
        "source_sha256": [r["sha256"] for r in rows]}), path)


def jpg_digests(out: str) -> list[str]:
    """sha256 of every .jpg member of the output tars."""
    digests = []
    for tar in sorted(glob.glob(os.path.join(out, "*.tar"))):
        with tarfile.open(tar) as tf:
            digests += [hashlib.sha256(tf.extractfile(m).read()).hexdigest()
                        for m in tf if m.name.endswith(".jpg")]
    return digests


def main() -> None:
    """Parse arguments; run build() in a (temporary) work dir."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output dir for shards + README.md")
    ap.add_argument("--count", type=int, default=1000, help="images to select; 0 = all")
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="work/cache dir (default: temp dir, removed afterwards)")
    ap.add_argument("--debs-dir", help="dir with already downloaded openclipart-{png,svg}_*.deb")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--resize-mode", default="keep_ratio_largest")
    ap.add_argument("--quality", type=int, default=85, help="JPEG encode_quality")
    ap.add_argument("--dup-fraction", type=float, default=0.15, help="budget: exact dup groups")
    ap.add_argument("--near-dup-fraction", type=float, default=0.05, help="budget: title dups")
    ap.add_argument("--max-group", type=int, default=6, help="max members taken per dup group")
    ap.add_argument("--max-pixels", type=int, default=20_000_000, help="skip bigger PNGs")
    args = ap.parse_args()

    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="shardguard-demo-"))
    os.makedirs(work, exist_ok=True)
    try:
        build(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def build(args: argparse.Namespace, work: str) -> None:
    """Run all stages; see the module docstring."""
    debs = fetch_debs(work, args.debs_dir)
    versions = {p: deb_field(d, "Version") for p, d in debs.items()}
    log(f"packages: {versions}")
    root = extract(debs, work)

    log("indexing PNGs (sha256) and SVG dc:title captions")
    entries, skipped = index(root, args.max_pixels)
    n_title = sum(e["caption_source"] == "svg_dc_title" for e in entries)
    log(f"indexed {len(entries)} PNGs in {len({e['category'] for e in entries})} categories "
        f"({n_title} with dc:title, {skipped} skipped > {args.max_pixels} px); "
        f"{dup_groups(e['sha256'] for e in entries)} exact-duplicate groups in the package")
    rows = select(entries, args.count, args.seed, args.dup_fraction,
                  args.near_dup_fraction, args.max_group)
    sha_n = collections.Counter(r["sha256"] for r in rows)
    log(f"selected {len(rows)} images: {dup_groups(r['sha256'] for r in rows)} exact-duplicate "
        f"groups ({sum(n for n in sha_n.values() if n > 1)} images), "
        f"{near_groups(rows)} same-title near-duplicate groups")

    import img2dataset  # heavy import (cv2, albumentations), only when needed
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    i2d_out, url_list = os.path.join(work, "i2d_out"), os.path.join(work, "url_list.parquet")
    shutil.rmtree(i2d_out, ignore_errors=True)
    t_dl = time.time()
    with serve(os.path.join(root, PNG_SUB), os.path.join(work, "http.log")) as port:
        write_url_list(rows, port, url_list)
        log(f"wrote {url_list}; running img2dataset.download")
        img2dataset.download(
            url_list=url_list, output_folder=i2d_out, input_format="parquet",
            url_col="url", caption_col="caption",
            save_additional_columns=["category", "source_path"],
            output_format="webdataset", image_size=args.image_size,
            resize_mode=args.resize_mode, encode_format="jpg", encode_quality=args.quality,
            number_sample_per_shard=args.shard_size, processes_count=2, thread_count=16,
            retries=1, timeout=10, disable_all_reencoding=False, enable_wandb=False,
            # incremental_mode="overwrite" is broken in 1.47.0 (it deletes the _tmp dir it
            # has just created -> FileNotFoundError _tmp/N.feather): start from an empty dir
            distributor="multiprocessing", incremental_mode="incremental")
    t_dl = time.time() - t_dl

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # only our own previous outputs
        if SHARD_FILE.fullmatch(f) or f == "README.md":
            os.remove(os.path.join(out, f))
    produced = sorted(os.listdir(i2d_out))
    kept = [f for f in produced if SHARD_FILE.fullmatch(f)]
    dropped = [f for f in produced if f not in kept]
    for f in kept:
        shutil.copy2(os.path.join(i2d_out, f), os.path.join(out, f))
    log(f"kept {len(kept)} files in {out}; dropped img2dataset extras: {dropped or 'none'}")

    import pyarrow.parquet as pq
    stats = [json.load(open(os.path.join(out, f))) for f in kept if f.endswith("_stats.json")]
    c = {k: sum(s.get(k, 0) for s in stats)
         for k in ("count", "successes", "failed_to_download", "failed_to_resize")}
    errors = sum((collections.Counter(s.get("status_dict", {})) for s in stats),
                 collections.Counter())
    ok = [m for f in kept if f.endswith(".parquet")
          for m in pq.read_table(os.path.join(out, f)).to_pylist() if m["status"] == "success"]
    src_dups, jpg_dups = dup_groups(m["sha256"] for m in ok), dup_groups(jpg_digests(out))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in kept)
    script = os.path.relpath(os.path.abspath(sys.argv[0]))
    cmd = shlex.join([".venv/bin/python", script] + sys.argv[1:])
    from importlib.metadata import version
    pkg_rows = "".join(f"| {p} | {versions[p]} | {os.path.basename(d)} |\n"
                       for p, d in debs.items())
    readme = f"""# ShardGuard demo sample (generated by `{script}`; do not edit)

LAION-style webdataset shards written by the real img2dataset v{version("img2dataset")}
from real public-domain clipart PNGs, served unmodified by a local `http.server`.

## Source
| package | version | .deb |
|---|---|---|
{pkg_rows}
Homepage: {deb_field(debs["openclipart-png"], "Homepage")}. License: **public domain**
(Open Clip Art Library, Creative Commons Public Domain Dedication; see
/usr/share/doc/openclipart-png/copyright in the package). Caption = the SVG's
`dc:title` ({n_title} of {len(entries)} indexed PNGs have one, else a file-name caption);
`category` = first folder under `/{PNG_SUB}/`; `source_path` = package path.

## Command
```
{cmd}
```
img2dataset: input_format=parquet, output_format=webdataset, image_size={args.image_size},
resize_mode={args.resize_mode} (longest side = {args.image_size}, no padding),
encode_format=jpg, encode_quality={args.quality}, number_sample_per_shard={args.shard_size},
processes_count=2, thread_count=16, retries=1, timeout=10,
save_additional_columns=[category, source_path]. img2dataset itself alpha-mats
transparent PNGs (RGBA, LA, palette+tRNS) onto white before JPEG encoding.

## Contents
- images: {c["successes"]} of {c["count"]} URLs ({c["successes"] / max(c["count"], 1):.1%} success;
  failed_to_download={c["failed_to_download"]}, failed_to_resize={c["failed_to_resize"]};
  status counts {dict(errors)})
- shards: {len(stats)} x (`NNNNN.tar` with key.jpg/.txt/.json, `NNNNN.parquet`,
  `NNNNN_stats.json`); total {size / 2**20:.2f} MiB ({size} bytes) without this README
- exact-duplicate groups (the package's real duplicates): {src_dups} by source PNG
  sha256 (`sha256` field), {jpg_dups} by identical output JPEG bytes (a few pixel-identical
  images are stored as differently encoded PNGs)
- same-title near-duplicate groups (2-3 different images with one specific dc:title):
  {near_groups(rows)}
- selection: seed {args.seed}; {len(entries)} PNGs indexed, {skipped} PNGs over
  {args.max_pixels} px skipped; img2dataset extras removed: {dropped or "none"};
  serving + download + encode took {t_dl:.0f} s, whole run {time.time() - T0:.0f} s
"""
    with open(os.path.join(out, "README.md"), "w") as fh:
        fh.write(readme)
    log(f"done: {c['successes']}/{c['count']} images in {len(stats)} shards, "
        f"{size / 2**20:.2f} MiB; exact-dup groups: {src_dups} by source PNG sha256, "
        f"{jpg_dups} by output JPEG bytes; status: {dict(errors)}")


if __name__ == "__main__":
    main()
