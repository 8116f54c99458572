"""Beam stages of the perturbation (unlearnable-data) audit.

The per-shard features are a stage of the one-read per-shard step (audit.perturbations.feature_stage,
run by pipelines.shard_stages).

TestPerturbations. Input: the output folder (one element). Output: a summary dict. Labels
(metadata field or k-means pseudo-labels), a stratified tested sample, thresholds from the
reference shards' bootstrap (or, without reference shards, the screening tests: p-values from data-derived nulls, Holm at
perturbations.alpha), the tests, a sanitizer trial and re-test when a test fails, per-sample flags for every sample with features. Writes perturbation_tests,
perturbation_flags and OUT/exports/perturbation_sanitizer.json (read by the clean job; for a failing
verdict against a reference it also holds `training_recommendation`: the epoch at which the
reference-validated accuracy peaks, audit.perturbations.early_stopping).
"""

from __future__ import annotations

import logging

import apache_beam as beam
import numpy as np

from audit.io import atomic_files
from audit.io.output_dir import OutputDir
from audit.perturbations import early_stopping
from audit.perturbations.perturbation_audit import AuditOutcome, PerturbationConfig, audit
from audit.perturbations.config import SANITIZER_FILE, config_json
from audit.perturbations.corpus import NoLabels, feature_table, image_set, labelled_corpus, split
from audit.perturbations.features import FEATURE_COLUMNS
from audit.perturbations.probes import MIN_PER_CLASS, usable
from audit.perturbations.verdicts import NO_VERDICT, feature_cuts, feature_outliers, robust_cuts, verdict_rows
from pipelines.shard_uris import open_uri
from pipelines.progress import counter
from schemas import PERTURBATION_FLAGS, PERTURBATION_TESTS

log = logging.getLogger("shardguard.perturbations")

MIN_FEATURE_REFERENCE = 10  # reference samples the per-sample feature cuts need; fewer: the data's own robust cuts


def flag_rows(out: OutputDir, run_id: str, cfg: PerturbationConfig, corpus, tested: np.ndarray,
              outcome: AuditOutcome | None) -> list[dict]:
    """perturbation_flags: every sample with features; test scores for the tested ones."""
    feats = feature_table(out, FEATURE_COLUMNS)
    if not feats:
        return []
    values = {c: feats[c] for c in FEATURE_COLUMNS}
    is_ref = np.isin(feats["shard"], list(cfg.reference_shards))
    cuts = (feature_cuts({c: v[is_ref] for c, v in values.items()}, cfg.feature_fpr / len(FEATURE_COLUMNS))
            if is_ref.sum() >= MIN_FEATURE_REFERENCE else robust_cuts(values))  # a few samples span no range
    outliers = feature_outliers(values, cuts)
    where = {(corpus.shard[i], corpus.key[i]): j for j, i in enumerate(tested)} if outcome else {}
    by_key = {(s, k): i for i, (s, k) in enumerate(zip(corpus.shard, corpus.key))} if corpus else {}
    scores = {v.result.test: v.result.sample_scores for v in (outcome.verdicts if outcome else [])}
    rows = []
    for i, (shard, key) in enumerate(zip(feats["shard"], feats["key"])):
        j = where.get((shard, key))
        reasons = [t for t, mask in (outcome.located.items() if outcome else []) if j is not None and mask[j]]
        if outliers[i] and not is_ref[i]:
            reasons.append("features")
        c = by_key.get((shard, key))
        rows.append({"run_id": run_id, "shard": shard, "key": key,
                     "label": corpus.names[corpus.label[c]] if c is not None else None,
                     "template_score": _at(scores.get("template_snr"), j),
                     "one_pixel": None if _at(scores.get("one_pixel"), j) is None else bool(scores["one_pixel"][j]),
                     "early_loss": None if _at(scores.get("learning_speed"), j) is None else -float(scores["learning_speed"][j]),
                     "feature_outliers": outliers[i], "flagged": bool(reasons), "reasons": reasons})
    return rows


def reference_too_small(labels: np.ndarray) -> str:
    """Why a reference of these labels cannot calibrate the tests ('' when it can): the
    bootstrap runs the class tests on 80% subsamples of it."""
    n_sub = int(0.8 * len(labels))
    if n_sub < 2 * MIN_PER_CLASS:
        return f"{len(labels)} labelled samples, too few for a bootstrap of {2 * MIN_PER_CLASS}-sample subsamples"
    why = usable(labels)
    return f"{len(labels)} labelled samples: the tests {why}" if why else ""


def _at(a, j):
    return None if a is None or j is None else float(a[j])


def test_and_record(out: OutputDir, run_id: str, cfg: PerturbationConfig) -> dict:
    summary: dict = {"notes": [], "config": config_json(cfg)}
    outcome, corpus, tested = None, None, np.zeros(0, np.int64)
    try:
        corpus = labelled_corpus(out, cfg)
    except NoLabels as e:
        summary["notes"].append(str(e))
    if corpus is not None:
        rows, ref_rows = split(corpus, cfg)
        if len(rows) < max(1, cfg.min_samples):
            summary["notes"].append(f"tests skipped: {len(rows)} samples to test, fewer than min_samples={cfg.min_samples}")
        else:
            data, tested = image_set(out, corpus, rows, open_uri)
            reference = None
            too_few = reference_too_small(corpus.label[ref_rows]) if len(ref_rows) else ""
            if too_few:
                summary["notes"].append(f"reference shards {list(cfg.reference_shards)}: {too_few}: screening")
            elif len(ref_rows):
                reference, _ = image_set(out, corpus, ref_rows, open_uri)
            elif cfg.reference_shards:
                summary["notes"].append(f"reference shards {list(cfg.reference_shards)} have no labelled samples: screening")
            log.info("perturbation tests on %d samples (%s), reference %d", len(data), corpus.source,
                     0 if reference is None else len(reference))
            outcome = audit(data, reference, cfg)
            tested = tested[outcome.tested]
            labels = dict(enumerate(corpus.names))
            trows = verdict_rows(outcome.verdicts, run_id=run_id, data="original", label_source=corpus.source,
                              labels=labels, n_samples=len(outcome.tested))
            for t in outcome.trials:
                trows += verdict_rows(t.verdicts, run_id=run_id, data=f"sanitized:{t.sanitizer}",
                                   label_source=corpus.source, labels=labels, n_samples=len(outcome.tested))
            out.write_run_table(PERTURBATION_TESTS, run_id, PERTURBATION_TESTS.from_rows(trows))
            ran = [v for v in outcome.verdicts if not v.result.skipped and v.result.test not in NO_VERDICT]
            if not ran:  # too few samples per class for any test: no verdict, not 'clean'
                why = next((v.result.skipped for v in outcome.verdicts if v.result.skipped), "")
                summary["notes"].append(f"tests skipped: no test could run on {len(outcome.tested)} samples ({why})")
            summary.update(label_source=corpus.source, n_tested=len(outcome.tested),
                           n_reference=0 if reference is None else len(reference),
                           thresholds="screening" if reference is None else "reference",
                           failed=outcome.failed, verdict=dataset_verdict(outcome, bool(ran), reference is None, cfg))
    flags = flag_rows(out, run_id, cfg, corpus, tested, outcome)
    n_ref = sum(r["shard"] in cfg.reference_shards for r in flags)
    if 0 < n_ref < MIN_FEATURE_REFERENCE:
        summary["notes"].append(f"feature flags: the reference shards have {n_ref} samples with features, fewer than "
                                f"{MIN_FEATURE_REFERENCE}: cuts from the data's own spread")
    out.write_run_table(PERTURBATION_FLAGS, run_id, PERTURBATION_FLAGS.from_rows(flags))
    summary["n_flagged"] = sum(r["flagged"] for r in flags)
    chosen = outcome.chosen if outcome else None
    summary["sanitizer"] = None if chosen is None else {
        "name": chosen.sanitizer, "params": named_params(chosen.params, corpus.names, cfg),
        "failed_after": [v.result.test for v in chosen.verdicts if v.verdict == "fail"]}
    if outcome is not None and outcome.failed and summary.get("thresholds") == "reference":
        summary["training_recommendation"] = early_stopping.for_outcome(outcome)  # peak-accuracy epoch
    atomic_files.write_json(out.root / SANITIZER_FILE, {"run_id": run_id, **summary})
    return summary


def dataset_verdict(outcome: AuditOutcome, ran: bool, screening: bool, cfg: PerturbationConfig) -> str:
    """'perturbed' / 'clean' against a reference; without one 'screening: evidence (...)' or
    'screening: no evidence at family-wise level ...', with the smallest Holm-adjusted p-value."""
    if not ran:
        return "untested"
    if not screening:
        return "perturbed" if outcome.failed else "clean"
    p = min((v.p_adjusted for v in outcome.verdicts if not np.isnan(v.p_adjusted)), default=float("nan"))
    if outcome.failed:
        return f"screening: evidence ({', '.join(outcome.failed)}; Holm p = {p:.2g} <= alpha {cfg.alpha:g})"
    return f"screening: no evidence at family-wise level {cfg.alpha:g} (smallest Holm p = {p:.2g})"


def named_params(params: dict, names: list[str], cfg: PerturbationConfig) -> dict:
    """The chosen sanitizer's parameters for the export, class-wise ones keyed by class name with
    the metadata field that names the class (None for pseudo-labels: the clean job cannot tell a
    new image's class then)."""
    if "kernels" not in params:
        return params
    return {**params, "kernels": {names[c]: k for c, k in params["kernels"].items()},
            "applied": [names[c] for c in params.get("applied", [])], "label_field": cfg.label_field or None}


class TestFn(beam.DoFn):
    def __init__(self, run_id: str, cfg: PerturbationConfig):
        self.run_id, self.cfg = run_id, cfg
        self.counts = {k: counter(f"perturbation_tests_{k}") for k in ("samples", "failed", "flagged")}

    def process(self, out_root: str):
        summary = test_and_record(OutputDir(out_root), self.run_id, self.cfg)
        self.counts["samples"].inc(summary.get("n_tested", 0))
        self.counts["failed"].inc(len(summary.get("failed", [])))
        self.counts["flagged"].inc(summary["n_flagged"])
        yield summary


class TestPerturbations(beam.PTransform):
    def __init__(self, out_root: str, run_id: str, cfg: PerturbationConfig):
        super().__init__()
        self.out_root, self.fn = out_root, TestFn(run_id, cfg)

    def expand(self, pbegin):
        return pbegin | "Corpus" >> beam.Create([self.out_root]) | "Test" >> beam.ParDo(self.fn)


