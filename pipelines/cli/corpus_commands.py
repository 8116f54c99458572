"""`shardguard contamination` and `shardguard clean`: the commands that read a finished audit and
act on its corpus (train-vs-eval copies into the eval audit's contamination table; training-ready
shards with the decisions applied). Parsers and handlers; the work is audit.dedup.contamination and
pipelines.clean. Failure: a folder that is not an audit, or a destination that is not ours, is a
UsageError (exit 2, pipelines.cli.dispatch)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from audit.io import store
from audit.dedup.corpus import load_corpus
from audit.io.folder_ownership import require_existing
from audit.io.output_dir import OutputDir
from audit.runs.ids import new_run_id
from audit.io.user_errors import UsageError
from pipelines.clean import run_clean
from pipelines.cli.status_commands import print_clean_plan
from pipelines.config import load_config, with_overrides
from pipelines.shard_uris import open_uri
from pipelines.scheduled_run import clean_lines
from schemas import CONTAMINATION, TABLES


def add_parsers(sub) -> None:
    c = sub.add_parser("contamination", help="find eval samples with a copy in a training set",
                       epilog="example:\n  shardguard contamination --train train-out --eval eval-out\n"
                              "  shardguard sql --out eval-out \"SELECT * FROM contamination\"",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--train", required=True, help="output folder of the training set's run")
    c.add_argument("--eval", required=True, help="output folder of the eval set's run (the table goes here)")
    c.add_argument("--threshold", type=float, help="SSCD cosine for a near copy (the config's dedup.near_threshold, 0.75)")
    c.add_argument("--config", help="job YAML (its dedup: section: near_verify, near_candidates, ...): "
                   "the same copy rule as dedup")
    k = sub.add_parser("clean", help="write training-ready shards with the decisions applied",
                       epilog="examples:\n  shardguard clean --from demo-out --to demo-clean\n"
                              "  shardguard clean --from demo-out --to clean-rc --caption-strategy rc --apply-to all",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--from", dest="src", required=True, help="audit output folder of `shardguard run`")
    k.add_argument("--to", help="destination folder for the clean shards (or the config's clean.to:); "
                   "a rerun appends new kept samples in new shards")
    k.add_argument("--config", help="job YAML (its clean: section)")
    k.add_argument("--shard-size", type=int, help="samples per output shard (10000)")
    k.add_argument("--caption-strategy", choices=["none", "mc", "rc", "rt", "cwr", "rna"],
                   help="caption randomization (Somepalli et al. 2023); default none")
    k.add_argument("--apply-to", choices=["all", "flagged", "none"], help="which samples get it (flagged)")
    k.add_argument("--epochs", type=int, help="caption variants per sample (1)")
    k.add_argument("--seed", type=int, help="caption policy seed (0)")
    k.add_argument("--sanitize", help="images: 'auto' (the perturbation audit's choice when it found poisons), "
                                      "'none', or jpeg|grayscale|bit_depth|median_filter|sharpen_lowpass")
    k.add_argument("--dry-run", action="store_true", help="list the output shards that would be written; write nothing")


def cmd_contamination(args) -> int:
    from audit.copy_check.feature_cache import saving_features  # OpenCV (the copy check)
    from audit.dedup.contamination import contamination_verifier, find_contamination
    train = OutputDir(require_existing(args.train, "audit"))
    ev = OutputDir(require_existing(args.eval, "audit", adopt=True))  # the table goes into it
    dedup = with_overrides(load_config(args.config), "dedup", near_threshold=args.threshold).dedup
    det = dedup.copy_detection()
    ev.lock()
    try:
        run_id = new_run_id()
        train_corpus, eval_corpus = load_corpus(train), load_corpus(ev)
        verifier = (contamination_verifier(train, train_corpus, ev, eval_corpus, open_uri, det.rule,
                                           run_id if dedup.near_feature_cache else None)
                    if dedup.near_verify else None)
        with saving_features(verifier):
            rows = find_contamination(train_corpus, eval_corpus, dedup.near_threshold, run_id, str(train.root),
                                      dedup.index, det, verifier)
        ev.write_run_table(CONTAMINATION, run_id, rows)
        store.refresh_views(ev, TABLES)
    finally:
        ev.unlock()
    n_eval = int((eval_corpus.status == "ok").sum())
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("exact", "near")}
    print(f"contamination: {len(rows)} of {n_eval} eval samples have a copy in {train.root} "
          f"({len(rows) / max(n_eval, 1):.1%}; exact {kinds['exact']}, near {kinds['near']})")
    if verifier is not None:
        print(f"copy check: {verifier.checked} pairs checked, {verifier.rejected} vetoed, "
              f"{verifier.added} candidates under the threshold added; {verifier.prepared} images prepared, "
              f"{verifier.cache_hits} from the feature cache")
    print(f'table: shardguard sql --out {shlex.quote(str(ev.root))} "SELECT * FROM contamination"')
    return 0


def cmd_clean(args, beam_args) -> int:
    cfg = load_config(args.config)
    cfg = with_overrides(cfg, "clean", shard_size=args.shard_size, apply_to=args.apply_to, epochs=args.epochs,
                         sanitize=args.sanitize)
    if args.caption_strategy or args.seed is not None:
        cap = dataclasses.replace(cfg.clean.caption, **{k: v for k, v in
                                  (("strategy", args.caption_strategy), ("seed", args.seed)) if v is not None})
        cfg = dataclasses.replace(cfg, clean=dataclasses.replace(cfg.clean, caption=cap))
    if not (args.to or cfg.clean.to):
        raise UsageError("shardguard clean needs --to DIR or clean.to in the --config file")
    if args.dry_run:
        return print_clean_plan(args.src, args.to or cfg.clean.to, cfg.clean)
    r = run_clean(args.src, args.to or cfg.clean.to, cfg.clean, beam_args)
    print("\n".join(clean_lines(r)))
    return 0
