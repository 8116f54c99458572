"""Data attribution with self-supervised features, measured on the tiny demo model, as a table.

    .venv/bin/python benchmarks/attribution.py   # 2 CPU cores: ~1 min per counterfactual query idle, up to 6 shared;
                                                 # the first run adds the audit (~2 min) and generation (~9 min)

Setup (cached under .cache/attribution-bench/, reused by later runs): the audit of the demo
model's training shards 00000-00002 (ingest + SSCD vectors, `shardguard run`'s job), the tiny
model assembled, and images generated from its 10 planted captions and from --others trained,
non-planted captions (--per-prompt seeds each; infra/demo/tiny_diffusion.py generate).
Then `shardguard attribution --generated GEN --against OUT --top-k K` (the command itself) and,
from its table:
  planted: share of images generated from a planted caption whose top-1 (and top-k) training
           image is that planted pair, n; chance is 1 / (training images).
  scores:  top-1 score quantiles for planted-caption vs other-caption images.
  counterfactual (audit.memorization.counterfactual): for --cf-queries queries (half from
           planted captions, half other), the denoising loss on the query (its pixels under its
           prompt, fixed draws) after fine-tuning --cf-steps steps without its top-k attributed
           training samples vs without k random ones (diff = top-k minus random: > 0 when the
           attributed samples mattered more to the query than random ones), and without another
           k random ones (floor = random2 minus random: the size of the difference chance makes).
No expected number is built in: the script prints what it measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "infra" / "demo"))

import numpy as np  # noqa: E402

TRAIN_SHARDS = "{00000..00002}"  # the demo model's training shards (00003 is held out)


def prepare(cache: Path, per_prompt: int, others: int, seed: int) -> tuple[Path, Path, Path]:
    """(audit folder, model folder, generated folder), each made once."""
    import tiny_diffusion
    from audit.embeddings.embedder_specs import EmbedConfig
    from pipelines.config import JobConfig
    from pipelines.job import run_ingest
    out, model, gen = cache / "out", cache / "model", cache / f"gen-{per_prompt}-{others}-{seed}"
    if not list((out / "_manifest" / "embed").glob("sscd*/00002.json")):
        t = time.time()
        run_ingest(str(REPO / "infra" / "demo" / "sample" / f"{TRAIN_SHARDS}.tar"), str(out),
                   JobConfig(progress_seconds=0, embed=EmbedConfig(captions=False)))
        print(f"audit of the training shards: {time.time() - t:.0f} s", flush=True)
    if not (model / "unet").is_dir():
        tiny_diffusion.assemble(model)
    if not list(gen.glob("*.png")):
        t = time.time()
        tiny_diffusion.generate(model, gen, per_prompt, others, seed)
        print(f"generated {len(list(gen.glob('*.png')))} images: {time.time() - t:.0f} s", flush=True)
    return out, model, gen


def attribution_rows(out: Path, gen: Path, k: int) -> list[dict]:
    from audit.io.store import query
    from pipelines.cli import main
    t = time.time()
    if main(["attribution", "--generated", str(gen), "--against", str(out), "--top-k", str(k)]) != 0:
        raise SystemExit("shardguard attribution failed")
    print(f"shardguard attribution: {time.time() - t:.1f} s", flush=True)
    cols, rows = query(out, "SELECT query, prompt, rank, shard, key, score, error FROM attribution ORDER BY query, rank")
    return [dict(zip(cols, r)) for r in rows]


def quality(rows: list[dict], planted: dict[str, tuple[str, str]], n_train: int) -> tuple[list, dict]:
    from audit.memorization.attribution import score_quantiles
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r["rank"] is not None:
            by.setdefault(r["query"], []).append(r)
    p_queries = [q for q, rs in by.items() if rs[0]["prompt"] in planted]
    o_queries = [q for q, rs in by.items() if rs[0]["prompt"] not in planted]
    top1 = [(by[q][0]["shard"], by[q][0]["key"]) == planted[by[q][0]["prompt"]] for q in p_queries]
    topk = [any((r["shard"], r["key"]) == planted[r["prompt"]] for r in by[q]) for q in p_queries]
    k = max(len(rs) for rs in by.values())
    table = [("planted: top-1 is the planted training image", f"{np.mean(top1):.0%}", len(top1), f"{1 / n_train:.1%}"),
             (f"planted: planted image in the top-{k}", f"{np.mean(topk):.0%}", len(topk), f"{k / n_train:.1%}")]
    scores = {}
    for name, qs in (("planted captions", p_queries), ("other captions", o_queries)):
        scores[name] = score_quantiles(by[q][0]["score"] for q in qs)
    return table, {"by": by, "planted_queries": p_queries, "other_queries": o_queries, "scores": scores,
                   "errors": sum(r["error"] is not None for r in rows)}


def counterfactual(model_dir: Path, gen: Path, by: dict, queries: list[str], cfg) -> list[dict]:
    import tiny_diffusion
    from PIL import Image

    from audit.memorization.counterfactual import compare
    from audit.memorization.diffusion_models import DiffusionModel, image_pixels
    model = DiffusionModel.load(model_dir, "cpu", dtype="float32")
    info = json.loads((model_dir / "planted.json").read_text())
    pairs = [p for p in tiny_diffusion.read_pairs(tiny_diffusion.SAMPLE) if p["shard"] != info["held_out_shard"]]
    row_of = {(p["shard"], p["key"]): i for i, p in enumerate(pairs)}
    x0 = model.to_model_space(image_pixels([p["image"] for p in pairs], model.resolution))
    emb = torch_cat([model.encode_prompts([p["caption"] for p in pairs[i:i + 256]]) for i in range(0, len(pairs), 256)])
    results = []
    for q in queries:
        t = time.time()
        rs = by[q]
        topk = [row_of[(r["shard"], r["key"])] for r in rs if (r["shard"], r["key"]) in row_of]
        qx = model.to_model_space(image_pixels([Image.open(gen / q)], model.resolution))
        res = compare(model, x0, emb, topk, qx, model.encode_prompts([rs[0]["prompt"] or ""]), cfg)
        results.append({"query": q, "prompt": rs[0]["prompt"], "k": len(topk), **res,
                        "diff": res["without_topk"] - res["without_random"],
                        "floor": res["without_random_2"] - res["without_random"], "seconds": time.time() - t})
        print(f"  counterfactual {q}: {results[-1]['seconds']:.0f} s", flush=True)
    return results


def torch_cat(parts):
    import torch
    return torch.cat(parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(REPO / ".cache" / "attribution-bench"))
    ap.add_argument("--per-prompt", type=int, default=2)
    ap.add_argument("--others", type=int, default=20)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cf-queries", type=int, default=6, help="counterfactual queries (half planted, half other)")
    ap.add_argument("--cf-steps", type=int, default=30)
    ap.add_argument("--cf-batch", type=int, default=16)
    ap.add_argument("--cf-lr", type=float, default=5e-4)
    args = ap.parse_args(argv)
    import torch
    from audit.memorization.counterfactual import FineTune
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out, model_dir, gen = prepare(Path(args.cache), args.per_prompt, args.others, args.seed)
    info = json.loads((model_dir / "planted.json").read_text())
    planted = {p["caption"]: (p["shard"], p["key"]) for p in info["planted"]}
    rows = attribution_rows(out, gen, args.top_k)
    from audit.io.store import query
    n_train = query(out, "SELECT count(*) FROM embeddings WHERE model LIKE 'sscd%'")[1][0][0]
    table, q = quality(rows, planted, n_train)

    print(f"\nAttribution by SSCD features, tiny demo model: {len(q['by'])} generated images "
          f"({args.per_prompt} seeds per caption), {n_train} training images, top-{args.top_k}; "
          f"{q['errors']} error rows")
    print(f"{'measure':<48} {'value':>7} {'n':>4} {'chance':>7}")
    for name, v, n, chance in table:
        print(f"{name:<48} {v:>7} {n:>4} {chance:>7}")
    print(f"\n{'top-1 score':<20} {'n':>4} {'mean':>6} {'p10':>6} {'p50':>6} {'p90':>6}")
    for name, s in q["scores"].items():
        print(f"{name:<20} {s['n']:>4} " + " ".join(f"{s[c]:>6.3f}" if s[c] is not None else f"{'-':>6}"
                                                 for c in ("mean", "p10", "p50", "p90")))

    half = args.cf_queries // 2
    picks, seen = [], set()
    for pool, n in ((q["planted_queries"], args.cf_queries - half), (q["other_queries"], half)):
        chosen = []
        for x in pool:  # one query per caption
            if len(chosen) < n and q["by"][x][0]["prompt"] not in seen:
                chosen.append(x)
                seen.add(q["by"][x][0]["prompt"])
        picks += chosen
    cfg = FineTune(steps=args.cf_steps, batch=args.cf_batch, lr=args.cf_lr, seed=args.seed)
    print(f"\ncounterfactual: {len(picks)} queries, fine-tune {cfg.steps} steps x batch {cfg.batch}, lr {cfg.lr}, "
          f"loss over {cfg.eval_draws} fixed (t, noise) draws", flush=True)
    res = counterfactual(model_dir, gen, q["by"], picks, cfg)
    print(f"{'query':<16} {'caption':<28} {'base':>7} {'-topk':>7} {'-random':>8} {'-random2':>8} {'diff':>8} {'floor':>8}")
    for r in res:
        print(f"{r['query'][:16]:<16} {(r['prompt'] or '')[:28]:<28} {r['base']:>7.4f} {r['without_topk']:>7.4f} "
              f"{r['without_random']:>8.4f} {r['without_random_2']:>8.4f} {r['diff']:>+8.4f} {r['floor']:>+8.4f}")
    if res:
        d, f = np.array([r["diff"] for r in res]), np.array([r["floor"] for r in res])
        print(f"mean difference (without top-k minus without random): {d.mean():+.4f}, > 0 for {int((d > 0).sum())} "
              f"of {len(d)} queries; noise floor (random2 minus random): mean |.| {np.abs(f).mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
