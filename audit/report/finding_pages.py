"""HTML pages for memorization, replication and attribution findings (OUT/reports/*.html).

Input: the rows just written to the memorization or replication tables, the output folder
(training images are read back from their tars by offset, audit.ingest.sample_store.StoredImages) and
an opener for shard URIs.
Output: a self-contained page; every caption, prompt, key and token is escaped.
Failure: `read_training_images` raises OSError when a shard's tar cannot be read (the report
notes it and shows "(no image)"); an image that no longer decodes is "(no image)".
"""

from __future__ import annotations

from typing import Callable

from audit.report.html_pages import image_tag, table, text, token_spans, write_page
from audit.ingest.image_decode import pil_rgb

THUMB_SIDE = 128  # images are decoded under ingest's guards and reduced to about 2x this right away
from audit.io.output_dir import OutputDir
from audit.ingest.sample_store import StoredImages


def read_training_images(out: OutputDir, keys: list[tuple[str, str]], opener: Callable) -> dict:
    """(shard, key) -> PIL image, read from the ingested tars by (image_offset, image_bytes)
    (audit.ingest.sample_store.StoredImages). A sample without a stored location, or whose bytes no
    longer decode, is left out. Failure: OSError naming the shards whose tars could not be read
    (or that have no ingest marker), so the caller can say why its images are missing."""
    if not keys:
        return {}
    with StoredImages(out, opener) as store:
        stored = store.many(keys)
    if store.failed:
        raise OSError("; ".join(f"{shard}: {why}" for shard, why in sorted(store.failed.items())))
    images = {}
    for sk, data in stored.items():
        try:
            images[sk] = pil_rgb(data, THUMB_SIDE)
        except Exception:  # shown as "(no image)"; the tables already hold the verdicts
            pass
    return images


def decode_or_none(data: bytes | None):
    try:
        return pil_rgb(data, THUMB_SIDE) if data else None
    except Exception:  # the replication row already says why; the page shows "(no image)"
        return None


def memorization_page(out: OutputDir, run: dict, rows: list[dict], opener: Callable, limit: int = 200) -> str:
    flagged = sorted((r for r in rows if r["flagged"]), key=lambda r: -r["score"])[:limit]
    images = read_training_images(out, [(r["shard"], r["key"]) for r in flagged], opener)
    head = (f"<p>Model <span class='mono'>{text(run['model_id'])}</span>, mode {text(run['mode'])}: "
            f"{run['n_flagged']} of {run['n_scored']} pairs flagged at d &ge; {run['threshold']:.4g} "
            f"({text(run['method'])} {run['level']} on {text(run['reference'])}, {run['reference_count']} "
            f"reference scores). Darker words triggered the memorization more (Wen et al., ICLR 2024).</p>")
    return write_page(out.root / "reports" / "memorization.html", "Memorized image-caption pairs",
                      head + memorization_table(flagged, images))


def memorization_table(rows: list[dict], images: dict, size: int = 128) -> str:
    """Memorization rows (shard, key, caption, score, trigger_tokens) as a table: the training
    image, the caption with its trigger words shaded (plain escaped caption without tokens), d."""
    body = [[image_tag(images.get((r["shard"], r["key"])), size), text(f"{r['shard']}/{r['key']}"),
             token_spans(r.get("trigger_tokens")) or text(r.get("caption")), f"{r['score']:.4g}"]
            for r in rows]
    return table(["training image", "sample", "caption (trigger tokens)", "d"], body)


def replication_page(out: OutputDir, summary: list[dict], rows: list[dict], generated: dict, opener: Callable,
                     limit: int = 100) -> str:
    """`generated` maps a generated image's name to its bytes; only the shown ones are decoded."""
    top = sorted((r for r in rows if r.get("top1_similarity") is not None), key=lambda r: -r["top1_similarity"])[:limit]
    shown = {r["generated"]: decode_or_none(generated.get(r["generated"])) for r in top}
    images = read_training_images(out, [(r["top1_shard"], r["top1_key"]) for r in top], opener)
    head = (f"<p>Top-1 SSCD similarity of each generated image to the training set; replicated = similarity "
            f"&gt; {summary[0]['threshold']} (Somepalli et al., CVPR 2023). Train-vs-train is the baseline.</p>")
    return write_page(out.root / "reports" / "replication.html", "Replication of training images",
                      head + replication_summary_table(summary) + "<h2>Most similar pairs</h2>" +
                      replication_pairs_table(top, shown, images))


def replication_summary_table(summary: list[dict]) -> str:
    return table(["set", "n", "replication rate", "mean top-1", "p95 top-1"],
                 [[text(s["set"]), str(s["n"]), "-" if s["replication_rate"] is None else f"{s['replication_rate']:.1%}",
                   "-" if s["mean_similarity"] is None else f"{s['mean_similarity']:.3f}",
                   "-" if s["p95_similarity"] is None else f"{s['p95_similarity']:.3f}"] for s in summary])


def replication_pairs_table(rows: list[dict], generated: dict, images: dict, size: int = 128) -> str:
    """Replication rows side by side: `generated` maps a generated id to its PIL image (or None),
    `images` (top1_shard, top1_key) to the training image."""
    body = [[image_tag(generated.get(r["generated"]), size), image_tag(images.get((r["top1_shard"], r["top1_key"])), size),
             f"{r['top1_similarity']:.3f}" + (" <b>replicated</b>" if r["replicated"] else ""),
             text(r["generated"]), text(r.get("prompt")), text(f"{r['top1_shard']}/{r['top1_key']}")]
            for r in rows]
    return table(["generated", "nearest training image", "similarity", "generated id", "prompt",
                  "training sample"], body)


ATTRIBUTION_STYLE = ".attr{display:inline-block;vertical-align:top;margin:0 6px 6px 0;text-align:center;font-size:12px}"


def attribution_page(out: OutputDir, rows: list[dict], generated: dict, opener: Callable, model: str,
                     limit: int = 100, size: int = 96) -> str:
    """One line per query (up to `limit`, in name order): the generated image, its prompt, and its
    top-k training images with their scores; error rows say why. `generated` maps a query's name
    to its bytes (only the shown ones are decoded)."""
    queries: dict[str, list[dict]] = {}
    for r in rows:
        queries.setdefault(r["query"], []).append(r)
    shown = sorted(queries)[:limit]
    matched = [r for q in shown for r in queries[q] if r.get("rank") is not None]
    try:
        images, note = read_training_images(out, sorted({(r["shard"], r["key"]) for r in matched}), opener), ""
    except OSError as e:  # the table holds the attribution; the page says why its images are missing
        images, note = {}, f"<p class='muted'>Training images could not be read: {text(e)}</p>"
    body = []
    for q in shown:
        ranked = sorted((r for r in queries[q] if r.get("rank") is not None), key=lambda r: r["rank"])
        err = next((r["error"] for r in queries[q] if r.get("error")), None)
        cells = "".join(f"<div class='attr'>{image_tag(images.get((r['shard'], r['key'])), size)}<br>"
                        f"#{r['rank']} {r['score']:.3f}<br><span class='mono'>{text(r['shard'])}/{text(r['key'])}"
                        f"</span></div>" for r in ranked)
        body.append([image_tag(decode_or_none(generated.get(q)), size), text(q), text(queries[q][0].get("prompt")),
                     cells or f"<span class='muted'>error: {text(err)}</span>"])
    k = max((r["rank"] for r in matched), default=0)
    head = (f"<p>Each generated image beside the {k} training images most similar to it in the feature space "
            f"of <span class='mono'>{text(model)}</span> (cosine of the audit's stored vectors): the "
            f"self-supervised-feature baseline of data attribution. {len(queries)} queries"
            f"{f', the first {limit} shown' if len(queries) > limit else ''}.</p>{note}")
    return write_page(out.root / "reports" / "attribution.html", "Attribution of generated images",
                      head + table(["generated", "query", "prompt", f"top-{k} training images (rank, score, sample)"],
                                   body), ATTRIBUTION_STYLE)
