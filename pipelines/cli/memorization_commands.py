"""`shardguard prompts` (prompt-only memorization detection), `shardguard replication` and
`shardguard attribution`.

  shardguard prompts --diffusion-model PATH --prompts FILE [--reference FILE] [--fpr 0.01]
  shardguard replication --generated PATH_OR_SHARDS --against OUT [--threshold 0.5]
  shardguard attribution --generated PATH_OR_SHARDS --against OUT [--top-k 10] [--model sscd|clip]

prompts: one prompt per line; scores each with Wen et al.'s d over the first denoising steps
from several seeds (no training image), calibrates on the reference prompts (default: the
prompts themselves), explains flagged prompts with trigger tokens, prints a table and, with
--jsonl, writes one JSON object per prompt.
replication: writes the replication and replication_summary tables and
OUT/reports/replication.html into the training set's output folder (locked while it runs).
attribution: writes the attribution table (each generated image's top-k training images by the
audit's stored SSCD or CLIP image vectors; only the queries are embedded) and
OUT/reports/attribution.html, the same way. An audit without vectors of the asked model is a
usage error (exit 2) naming the image models it has.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from audit.io import store
from audit.embeddings.embedder_specs import visible_devices
from audit.report.finding_pages import attribution_page, replication_page
from audit.io.folder_ownership import require_existing
from audit.memorization.config import ScoreConfig
from audit.io.output_dir import OutputDir
from audit.memorization.attribution import FAMILIES, attribute, query_embedder, score_quantiles, top1_scores
from audit.memorization.replication import (image_index, match_generated, read_generated, sscd_embedder, sscd_index, stats,
                                            train_vs_train)
from audit.runs.ids import new_run_id
from audit.memorization.score_calibration import calibrate
from audit.io.user_errors import UsageError
from pipelines.cli.query_output import format_table
from pipelines.shard_uris import open_uri
from schemas import ATTRIBUTION, REPLICATION, REPLICATION_SUMMARY, TABLES


def add_parsers(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("prompts", help="prompt-only memorization detection (Wen et al.) for a list of prompts",
                       formatter_class=raw, epilog="examples:\n"
                       "  shardguard prompts --diffusion-model /models/sd-v1-5 --prompts prompts.txt\n"
                       "  shardguard prompts --diffusion-model /models/sd-v1-5 --prompts p.txt --reference ref.txt "
                       "--fpr 0.01 --jsonl scores.jsonl")
    p.add_argument("--diffusion-model", required=True, metavar="PATH", help="diffusers checkpoint folder")
    p.add_argument("--prompts", required=True, help="text file, one prompt per line")
    p.add_argument("--reference", help="prompts taken as non-memorized, to calibrate on (default: --prompts)")
    p.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate on the reference (0.01)")
    p.add_argument("--steps", type=int, default=1, help="first denoising steps scored (1)")
    p.add_argument("--seeds", type=int, default=4, help="random starting latents per prompt (4)")
    p.add_argument("--device", default="auto")
    p.add_argument("--jsonl", help="also write one JSON object per prompt here")
    r = sub.add_parser("replication", help="top-1 SSCD similarity of generated images to a training set",
                       formatter_class=raw, epilog="examples:\n"
                       "  shardguard replication --generated gen-images/ --against demo-out\n"
                       "  shardguard replication --generated 'gen/*.tar' --against /data/audit --threshold 0.5")
    r.add_argument("--generated", required=True, help="folder of images (+ .txt prompts), a .tar, or a glob of tars")
    r.add_argument("--against", required=True, help="the training set's audit output folder (has SSCD embeddings)")
    r.add_argument("--threshold", type=float, default=0.5, help="replicated when top-1 similarity > this (0.5)")
    r.add_argument("--baseline-samples", type=int, default=1000, help="training images in the train-vs-train baseline")
    r.add_argument("--sscd-torchscript", metavar="PATH", help="the TorchScript SSCD the training run used, if any")
    a = sub.add_parser("attribution", help="training images that explain each generated image (self-supervised features)",
                       formatter_class=raw, epilog="examples:\n"
                       "  shardguard attribution --generated gen-images/ --against demo-out\n"
                       "  shardguard attribution --generated 'gen/*.tar' --against /data/audit --top-k 20\n"
                       "  shardguard attribution --generated gen/ --against /data/audit --model clip "
                       "--clip-checkpoint /models/clip.safetensors\n"
                       "  shardguard sql --out demo-out \"SELECT query, rank, shard, key, score FROM attribution "
                       "WHERE rank <= 3\"")
    a.add_argument("--generated", required=True, help="folder of images (+ .txt prompts), a .tar, or a glob of tars")
    a.add_argument("--against", required=True, help="the training set's audit output folder (has its image vectors)")
    a.add_argument("--top-k", type=int, default=10, help="training images per generated image (10)")
    a.add_argument("--model", choices=FAMILIES, default="sscd",
                   help="whose stored image vectors: sscd (default) or clip (the audit must have them)")
    a.add_argument("--sscd-torchscript", metavar="PATH", help="the TorchScript SSCD the training run used, if any")
    a.add_argument("--clip-checkpoint", metavar="PATH", help="the CLIP .safetensors the audit used (--model clip)")


def _lines(path: str) -> list[str]:
    try:
        text = Path(path).read_text("utf-8", "replace")
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror}); pass a text file with one prompt per line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cmd_prompts(args) -> int:
    from audit.memorization.diffusion_models import DiffusionModel  # torch, diffusers
    from audit.memorization.scoring import score_prompts
    from audit.memorization.trigger_tokens import token_influence
    prompts = _lines(args.prompts)
    if not prompts:
        raise UsageError(f"{args.prompts} has no prompts; put one prompt per line")
    model = DiffusionModel.load(args.diffusion_model, visible_devices(args.device)[0])
    cfg = ScoreConfig(first_steps=args.steps, seeds=tuple(range(args.seeds)))
    scores = score_prompts(model, prompts, cfg)
    ref_prompts = _lines(args.reference) if args.reference else None
    ref = score_prompts(model, ref_prompts, cfg) if ref_prompts else scores
    cal = calibrate(ref.mean(1), "fpr", args.fpr, args.reference or f"{args.prompts} (the prompts themselves)")
    flagged = [i for i in range(len(prompts)) if scores[i].mean() >= cal.threshold]
    tokens = dict(zip(flagged, token_influence(model, [prompts[i] for i in flagged], cfg))) if flagged else {}
    rows = [{"prompt": p, "score": float(scores[i].mean()), "step_scores": scores[i].tolist(),
             "threshold": cal.threshold, "flagged": i in tokens,
             "trigger_tokens": [{"token": t, "score": s} for t, s in tokens.get(i, [])]}
            for i, p in enumerate(prompts)]
    print(format_table(["prompt", "d", "flagged", "trigger tokens"],
                       [(r["prompt"], f"{r['score']:.4g}", r["flagged"],
                         " ".join(f"{t['token']}:{t['score']:.2f}" for t in r["trigger_tokens"])) for r in rows]))
    print(f"model {model.model_id}: {len(flagged)} of {len(prompts)} prompts flagged at d >= {cal.threshold:.4g} "
          f"(fpr {args.fpr} on {cal.reference_count} reference prompts: {cal.reference})")
    if args.jsonl:
        Path(args.jsonl).write_text("".join(json.dumps({**r, "model_id": model.model_id}) + "\n" for r in rows))
    return 0


def cmd_replication(args) -> int:
    out = OutputDir(require_existing(args.against, "audit", adopt=True))  # tables and a page go into it
    try:
        items = read_generated(args.generated)
    except FileNotFoundError as e:  # nothing matched --generated: the user's to fix
        raise UsageError(f"--generated: {e}") from None
    index = sscd_index(out)
    rows = match_generated(items, index, sscd_embedder(index.model_id, args.sscd_torchscript), args.threshold)
    gen = [r["top1_similarity"] for r in rows if r.get("top1_similarity") is not None]
    run_id = new_run_id()
    summary = [{"run_id": run_id, "set": name, "threshold": args.threshold, "generated_from": args.generated,
                "against": str(out.root), **stats(s, args.threshold)}
               for name, s in (("generated", gen), ("train_vs_train", train_vs_train(index, args.baseline_samples)))]
    out.lock()
    try:
        out.write_run_table(REPLICATION, run_id, [{**r, "run_id": run_id} for r in rows])
        out.write_run_table(REPLICATION_SUMMARY, run_id, summary)
        page = replication_page(out, summary, rows, {g.name: g.data for g in items}, open_uri)
        store.refresh_views(out, TABLES)
    finally:
        out.unlock()
    for s in summary:
        rate = "-" if s["replication_rate"] is None else f"{s['replication_rate']:.1%}"
        mean = "-" if s["mean_similarity"] is None else f"{s['mean_similarity']:.3f}"
        p95 = "-" if s["p95_similarity"] is None else f"{s['p95_similarity']:.3f}"
        print(f"{s['set']:>15}: n={s['n']}, replication rate {rate} (top-1 > {args.threshold}), "
              f"mean {mean}, p95 {p95}")
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        print(f"{failed} generated images could not be checked (rows with error set)")
    print(f"report: {page}")
    print(f'table:  shardguard sql --out {out.root} "SELECT * FROM replication ORDER BY top1_similarity DESC"')
    return 0


def cmd_attribution(args) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: give at least 1")
    out = OutputDir(require_existing(args.against, "audit", adopt=True))  # a table and a page go into it
    try:
        items = read_generated(args.generated)
    except FileNotFoundError as e:  # nothing matched --generated: the user's to fix
        raise UsageError(f"--generated: {e}") from None
    try:
        index = image_index(out, args.model)
    except FileNotFoundError as e:  # the audit has no vectors of this model: another --model, or audit with it
        raise UsageError(f"--against {args.against}: {e}") from None
    if not index.keys:
        raise UsageError(f"--against {args.against}: its {index.model_id} vectors are empty (nothing was embedded)")
    rows = attribute(items, index, query_embedder(index.model_id, args.sscd_torchscript, args.clip_checkpoint),
                     args.top_k)
    run_id = new_run_id()
    out.lock()
    try:
        out.write_run_table(ATTRIBUTION, run_id, [{**r, "run_id": run_id} for r in rows])
        page = attribution_page(out, rows, {g.name: g.data for g in items}, open_uri, index.model_id)
        store.refresh_views(out, TABLES)
    finally:
        out.unlock()
    q = score_quantiles(top1_scores(rows).values())
    print(format_table(["query", "prompt", "top-1 sample", "score"],
                       [(r["query"], r["prompt"] or "", f"{r['shard']}/{r['key']}", f"{r['score']:.3f}")
                        for r in rows if r.get("rank") == 1][:20]))
    if q["n"]:
        print(f"{q['n']} queries attributed to their top-{min(args.top_k, len(index.keys))} of {len(index.keys)} "
              f"training images ({index.model_id}); top-1 score mean {q['mean']:.3f}, "
              f"p10 {q['p10']:.3f}, median {q['p50']:.3f}, p90 {q['p90']:.3f}")
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        print(f"{failed} generated images could not be attributed (rows with error set)")
    print(f"report: {page}")
    print(f'table:  shardguard sql --out {out.root} '
          '"SELECT query, rank, shard, key, score FROM attribution ORDER BY query, rank"')
    return 0
