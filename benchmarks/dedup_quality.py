"""Near-duplicate (copy) detection quality: ShardGuard's SSCD detector against perceptual hashes.

    .venv/bin/python benchmarks/dedup_quality.py               # 200 sources, seed 0: ~7 min *
    .venv/bin/python benchmarks/dedup_quality.py --no-int8     # skip SscdOnnx("sscd") int8: ~3 min *
    .venv/bin/python benchmarks/dedup_quality.py --sources 120 # fewer images: ~4 min (estimated) *
(* on a 2-core CPU shared with other work; the int8 row is 2/3 of the time.)

Needs the `bench` extra (imagededup, ImageHash). imagededup's CNN method downloads its
weights from the internet at run time, which this machine cannot do, so it is not run.

Data: --sources real images drawn (seed 0) from the committed demo sample's distinct images
(infra/demo/sample, openclipart via img2dataset, <= 256 px, white backgrounds; its all-white
images are left out of the pool: they carry nothing to copy and all look alike). Each source
gets one copy per transform: center crops keeping 50/70/80/90% of each side, resize x0.5 and
x1.5, JPEG q20/50/90, colour jitter (brightness, contrast, saturation each x U[0.8, 1.2]),
horizontal flip, rotation by +-5 and +-10 degrees (sign random, expand=False, white fill), a
caption-like text overlay (another source's caption, PIL default font at 1/9 of the height,
across the middle), Gaussian blur r=2, grayscale, and "mixed" (crop 80% then JPEG q50).
Copies other than the JPEG ones are stored as lossless PNG so only the named transform acts.
Clipart is often a small drawing on a big white canvas, or fills it: a crop (also the crop in
"mixed") that would remove more than 10% of the drawn pixels (grayscale < 245) is skipped and
counted, so crop rows hold only drawings that sit well inside the canvas (crop50: a handful).
Candidates = all sources + all copies, mixed together; every other source is a negative.

Ground truth: two images are a true pair when they come from the same source, or when their
decoded pixels are identical (`decode_image(b).pixel_hash`; such sources' groups are merged).

Methods, each at a fixed threshold chosen before seeing this data:
- ShardGuard: `SscdOnnx("sscd_distilled")` and `SscdOnnx("sscd")` (int8) embeddings,
  pairs = `self_edges(vectors, 0.75)` (cosine >= 0.75, SSCD's documented copy threshold);
  "+verify" rows: the same pairs, those under cosine 0.9 kept only when they pass
  audit.copy_verification (SIFT + RANSAC alignment, ink overlap >= 0.9), as the dedup job does
  by default (DedupConfig.near_verify); their wall time is the verification's alone.
- imagededup 0.3.3 PHash, DHash, WHash: `find_duplicates(encoding_map=...)` at their default
  max_distance_threshold=10 (Hamming bits of 64).
- ImageHash phash, Hamming distance <= 10.

Metrics, per row, pairwise: a row's subset = all sources + the copies its transforms made
("mild" = JPEG q50/q90, resize x0.5/x1.5, crop 80/90%, flip; "all" = every copy). A transform
row (and "mild") counts the pairs inside its subset that involve at least one of its copies:
R = found true pairs / true pairs (for one transform: exactly the (source, its copy) pairs),
P = true pairs / predicted pairs, so P charges the copies' false matches (a copy against other
sources) but not source-source matches, which are no transform's doing. "all" counts every
pair of the whole candidate set: the overall precision over all predicted pairs. The
source-source false matches are listed after the table. Unprocessable images match nothing.
The target (the issue): ShardGuard R >= 0.95 at P >= 0.98 on "mild", and a higher overall F1
than the best peer. After the table, one "(oracle threshold)" line per method gives P/R/F1 on
"all" at the threshold that maximizes that F1 on this very data (optimistic; not a result).

Output: a header (sources, images, skipped crops, wall time per method), then one table,
"true pairs" = the row's true-pair count, then source-source matches, oracle and target lines:

    transform   true | sscd_distilled  | sscd_int8       | idd_phash       | ...
               pairs |    P    R   F1   |    P    R   F1   |    P    R   F1   | ...
    crop70        44 | 1.00 1.00 1.00   | ...

Timings are approximate: a shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from audit.image_decode import ImageRejected, decode_image, to_rgb  # noqa: E402
from tests.demo_images import demo_images  # noqa: E402

SSCD_THRESHOLD = 0.75
HASH_THRESHOLD = 10
CROPS = {"crop50": 0.5, "crop70": 0.7, "crop80": 0.8, "crop90": 0.9}
TRANSFORMS = ["crop50", "crop70", "crop80", "crop90", "resize0.5", "resize1.5", "jpeg20", "jpeg50", "jpeg90",
              "jitter", "hflip", "rot5", "rot10", "text", "blur2", "gray", "mixed"]
MILD = ["jpeg50", "jpeg90", "resize0.5", "resize1.5", "crop80", "crop90", "hflip"]
WHITE = (255, 255, 255)


def encode(img: Image.Image, fmt: str = "PNG", quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def crop_box(img: Image.Image, frac: float) -> tuple[int, int, int, int]:
    w, h = img.size
    cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
    x, y = (w - cw) // 2, (h - ch) // 2
    return x, y, x + cw, y + ch


def crop_keeps_content(img: Image.Image, frac: float, keep: float = 0.9) -> bool:
    """True when the center crop keeps >= `keep` of the drawn (grayscale < 245) pixels."""
    drawn = np.asarray(img.convert("L")) < 245
    total = drawn.sum()
    if total == 0:
        return True
    x0, y0, x1, y1 = crop_box(img, frac)
    return drawn[y0:y1, x0:x1].sum() >= keep * total


def text_overlay(img: Image.Image, text: str) -> Image.Image:
    out = img.copy()
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, img.height // 9))
    while len(text) > 4 and draw.textlength(text, font=font) > 0.95 * img.width:
        text = text[:-1]
    draw.text((img.width * 0.025, img.height * 0.45), text, fill=(220, 20, 20), font=font,
              stroke_width=1, stroke_fill=(0, 0, 0))
    return out


def transform(name: str, img: Image.Image, rng: np.random.Generator, caption: str) -> bytes | None:
    """Encoded copy of `img` under transform `name`; None when a crop would cut the drawing."""
    if name in CROPS or name == "mixed":
        frac = CROPS.get(name, 0.8)
        if not crop_keeps_content(img, frac):
            return None
        cropped = img.crop(crop_box(img, frac))
        return encode(cropped, "JPEG", 50) if name == "mixed" else encode(cropped)
    if name.startswith("resize"):
        s = float(name[6:])
        return encode(img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BICUBIC))
    if name.startswith("jpeg"):
        return encode(img, "JPEG", int(name[4:]))
    if name == "jitter":
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enh(img).enhance(rng.uniform(0.8, 1.2))
        return encode(img)
    if name == "hflip":
        return encode(ImageOps.mirror(img))
    if name.startswith("rot"):
        angle = float(name[3:]) * rng.choice([-1, 1])
        return encode(img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=WHITE))
    if name == "text":
        return encode(text_overlay(img, caption))
    if name == "blur2":
        return encode(img.filter(ImageFilter.GaussianBlur(2)))
    if name == "gray":
        return encode(img.convert("L"))
    raise ValueError(name)


def build_dataset(n_sources: int, seed: int):
    """datas, group, family (-1 = source, else index in TRANSFORMS), n sources, skips, merges, blanks."""
    pool = demo_images(100_000)
    drawn = [(np.asarray(to_rgb(Image.open(io.BytesIO(b))).convert("L")) < 245).any() for _, b, _, _ in pool]
    blank = len(pool) - sum(drawn)  # all-white images: nothing to copy, all alike
    pool = [p for p, d in zip(pool, drawn) if d]
    rng = np.random.default_rng(seed)
    picked = [pool[k] for k in sorted(rng.choice(len(pool), min(n_sources, len(pool)), replace=False))]
    captions = [c for _, _, c, _ in pool]
    datas, group, family = [], [], []
    for s, (_, data, _, _) in enumerate(picked):
        datas.append(data), group.append(s), family.append(-1)
    skipped: dict[str, int] = {}
    for s, (_, data, _, _) in enumerate(picked):
        img = to_rgb(Image.open(io.BytesIO(data)))
        for t, name in enumerate(TRANSFORMS):
            copy = transform(name, img, rng, captions[rng.integers(len(captions))])
            if copy is None:
                skipped[name] = skipped.get(name, 0) + 1
                continue
            datas.append(copy), group.append(s), family.append(t)
    # Pixel-identical images are the same picture: merge their groups (union-find).
    parent = list(range(len(picked)))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g
    first: dict[str, int] = {}
    for k, data in enumerate(datas):
        try:
            h = decode_image(data, keep_rgb=False).pixel_hash
        except ImageRejected:
            continue
        if h in first:
            parent[root(group[k])] = root(group[first[h]])
        else:
            first[h] = k
    merged = sum(1 for g in range(len(picked)) if root(g) != g)
    group = np.array([root(g) for g in group], np.int64)
    return datas, group, np.array(family, np.int64), len(picked), skipped, merged, blank


# ---- methods: each returns (predicted pairs i<j, all-pairs score for the oracle, higher = closer) ----

def sscd_method(variant: str, datas: list[bytes], batch: int = 64):
    from audit.sscd_models import SscdOnnx
    from audit.vector_index import self_edges
    model = SscdOnnx(variant)
    vecs = np.zeros((len(datas), 512), np.float32)
    ok = np.zeros(len(datas), bool)
    for start in range(0, len(datas), batch):
        e = model.embed(datas[start:start + batch])
        idx = np.asarray(e.index, np.int64) + start
        vecs[idx], ok[idx] = e.vectors, True
        print(f"  {variant}: {min(start + batch, len(datas))}/{len(datas)}", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    where = np.flatnonzero(ok)
    edges = self_edges(vecs[where], SSCD_THRESHOLD)
    pairs = np.stack([where[edges.i], where[edges.j]], 1)
    score = vecs @ vecs.T
    score[~ok, :] = score[:, ~ok] = -np.inf
    return pairs, score, int((~ok).sum())


def verified_method(sscd_result, datas: list[bytes]):
    """The job's default near rule: SSCD pairs under DedupConfig.near_verify_below must pass
    audit.copy_verification (SIFT alignment, ink overlap >= near_verify_overlap). The oracle
    score stays SSCD's. Timed on its own: the verification only."""
    from audit.copy_verification import PairVerifier
    from audit.duplicate_clusters import DedupConfig
    cfg = DedupConfig()
    pairs, score = sscd_result
    verifier = PairVerifier(lambda row: datas[row], cfg.near_verify_overlap)
    keep = [score[i, j] >= cfg.near_verify_below or verifier.same_picture(int(i), int(j)) for i, j in pairs]
    print(f"  verified {verifier.checked} pairs under {cfg.near_verify_below}, rejected {verifier.rejected}",
          file=sys.stderr)
    return pairs[np.array(keep, bool)] if len(pairs) else pairs, score, 0


def hamming_matrix(hashes: list[int]) -> np.ndarray:
    h = np.array(hashes, np.uint64)
    return np.bitwise_count(h[:, None] ^ h[None, :]).astype(np.float32)


def imagededup_method(cls_name: str, datas: list[bytes]):
    import imagededup.methods as idm
    hasher = getattr(idm, cls_name)(verbose=False)
    enc = {str(k): hasher.encode_image(image_array=np.asarray(to_rgb(Image.open(io.BytesIO(d)))))
           for k, d in enumerate(datas)}
    bad = [k for k, v in enc.items() if v is None]
    enc = {k: v for k, v in enc.items() if v is not None}
    with warnings.catch_warnings():  # 'num_enc_workers has no effect' when encodings are given
        warnings.simplefilter("ignore", RuntimeWarning)
        dups = hasher.find_duplicates(encoding_map=enc, max_distance_threshold=HASH_THRESHOLD)
    pairs = np.array(sorted({(min(int(a), int(b)), max(int(a), int(b))) for a, bs in dups.items() for b in bs}),
                     np.int64).reshape(-1, 2)
    hashes = [int(enc.get(str(k), "0"), 16) for k in range(len(datas))]
    score = -hamming_matrix(hashes)
    for k in bad:
        score[int(k), :] = score[:, int(k)] = -np.inf
    return pairs, score, len(bad)


def imagehash_method(datas: list[bytes]):
    import imagehash
    hashes = [int(str(imagehash.phash(to_rgb(Image.open(io.BytesIO(d))))), 16) for d in datas]
    score = -hamming_matrix(hashes)
    iu, ju = np.triu_indices(len(datas), 1)
    keep = score[iu, ju] >= -HASH_THRESHOLD
    return np.stack([iu[keep], ju[keep]], 1).astype(np.int64), score, 0


# ---- metrics ----

def prf(pairs: np.ndarray, group: np.ndarray, subset: np.ndarray, copies: np.ndarray | None):
    """P/R/F1 (and the true-pair count) over pairs with both ends in `subset` and, unless
    `copies` is None, at least one end in `copies`: source-source pairs are not a transform's."""
    keep = subset[pairs[:, 0]] & subset[pairs[:, 1]]
    if copies is not None:
        keep &= copies[pairs[:, 0]] | copies[pairs[:, 1]]
    p = pairs[keep]
    tp = int((group[p[:, 0]] == group[p[:, 1]]).sum())
    k = np.bincount(group[subset], minlength=group.max() + 1)
    n_true = int((k * (k - 1) // 2).sum())
    if copies is not None:
        k0 = np.bincount(group[subset & ~copies], minlength=group.max() + 1)
        n_true -= int((k0 * (k0 - 1) // 2).sum())
    prec = tp / len(p) if len(p) else 1.0
    rec = tp / n_true if n_true else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1, n_true


def oracle(score: np.ndarray, group: np.ndarray) -> tuple[float, float, float, float]:
    """(threshold, P, R, F1) at the score threshold maximizing F1 over all pairs."""
    iu, ju = np.triu_indices(len(group), 1)
    s = score[iu, ju]
    y = group[iu] == group[ju]
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # cut only between distinct scores
    last = last[np.isfinite(s[last])]
    prec, rec = tp[last] / (last + 1), tp[last] / max(1, y.sum())
    f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
    b = int(np.argmax(f1))
    return float(s[last[b]]), float(prec[b]), float(rec[b]), float(f1[b])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-int8", action="store_true", help="skip SscdOnnx('sscd') (~55 ms/img on 2 cores)")
    args = ap.parse_args()
    logging.disable(logging.INFO)  # imagededup logs every search at INFO to stderr
    import imagededup.methods  # noqa: F401  (imports torch; kept out of the per-method timings)

    t0 = time.perf_counter()
    datas, group, family, n_src, skipped, merged, blank = build_dataset(args.sources, args.seed)
    print(f"dataset: {n_src} sources + {len(datas) - n_src} copies = {len(datas)} images "
          f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)

    methods = {"sscd_distilled": lambda: sscd_method("sscd_distilled", datas),
               "sscd_dist+verify": lambda: verified_method(results["sscd_distilled"], datas)}
    if not args.no_int8:
        methods["sscd_int8"] = lambda: sscd_method("sscd", datas)
        methods["sscd_int8+verify"] = lambda: verified_method(results["sscd_int8"], datas)
    methods |= {f"idd_{c.lower()}": (lambda c=c: imagededup_method(c, datas)) for c in ("PHash", "DHash", "WHash")}
    methods["imagehash_phash"] = lambda: imagehash_method(datas)
    results, timings, failed = {}, {}, {}
    for name, run in methods.items():
        print(f"running {name} ...", file=sys.stderr)
        t = time.perf_counter()
        pairs, score, nfail = run()
        timings[name] = time.perf_counter() - t
        results[name] = (pairs, score)  # (the +verify methods read their SSCD method's result)
        failed[name] = nfail
        print(f"  {name}: {len(pairs)} predicted pairs, {timings[name]:.1f}s", file=sys.stderr)

    src = family == -1
    rows = [(name, src | (family == k), family == k) for k, name in enumerate(TRANSFORMS)]
    mild = np.isin(family, [TRANSFORMS.index(t) for t in MILD])
    rows += [("mild", src | mild, mild), ("all", np.ones(len(family), bool), None)]

    skip_txt = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"
    print(f"\nsources={n_src} images={len(datas)} (seed {args.seed}); skipped crops (>10% of drawing cut): "
          f"{sum(skipped.values())} [{skip_txt}]; pixel-identical source groups merged: {merged}; "
          f"all-white demo images left out of the pool: {blank}")
    print("wall time (embed/hash + search, approx., shared 2-core CPU): " + ", ".join(
        f"{m} {timings[m]:.1f}s ({1000 * timings[m] / len(datas):.1f} ms/img)" for m in methods))
    fails = {m: f for m, f in failed.items() if f}
    if fails:
        print(f"images a method could not process (they match nothing): {fails}")
    print(f"thresholds: SSCD cosine >= {SSCD_THRESHOLD}; hashes Hamming <= {HASH_THRESHOLD}/64\n")
    w = 16
    print(f"{'transform':<10} {'true':>5} " + "".join(f"| {m:<{w}}" for m in methods))
    print(f"{'':<10} {'pairs':>5} " + "".join(f"| {'P':>4} {'R':>4} {'F1':>4}   " for _ in methods))
    table = {}
    for rname, subset, copies in rows:
        cells = []
        for m in methods:
            p, r, f, n_true = prf(results[m][0], group, subset, copies)
            table[(rname, m)] = (p, r, f)
            cells.append(f"| {p:4.2f} {r:4.2f} {f:4.2f}   ")
        if rname == "mild":
            print("-" * (17 + (w + 2) * len(methods)))
        print(f"{rname:<10} {n_true:>5} " + "".join(cells))
    print("predicted pairs of two different sources (negatives unless pixel-identical): " + ", ".join(
        f"{m} {int((src[results[m][0][:, 0]] & src[results[m][0][:, 1]]).sum())}" for m in methods))
    print()
    for m in methods:
        thr, p, r, f = oracle(results[m][1], group)
        desc = f"cosine >= {thr:.3f}" if m.startswith("sscd") else f"Hamming <= {-thr:.0f}"
        print(f"{m:<16} (oracle threshold) {desc:<16} all: P={p:.3f} R={r:.3f} F1={f:.3f}  "
              f"(fixed: F1={table[('all', m)][2]:.3f})")
    print()
    peers = [m for m in methods if not m.startswith("sscd")]
    best_peer = max(peers, key=lambda m: table[("all", m)][2])
    for m in [m for m in methods if m.startswith("sscd")]:
        p, r, _ = table[("mild", m)]
        f_all = table[("all", m)][2]
        print(f"target {m}: mild R={r:.3f} (>=0.95) at P={p:.3f} (>=0.98): "
              f"{'MET' if r >= 0.95 and p >= 0.98 else 'NOT MET'}; all F1={f_all:.3f} vs best peer "
              f"{best_peer} {table[('all', best_peer)][2]:.3f}: {'MET' if f_all > table[('all', best_peer)][2] else 'NOT MET'}")
    print(f"total wall time {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
