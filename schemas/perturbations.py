"""Availability-poisoning ("unlearnable data") audit tables.

Files: perturbation_samples is per shard, written by the streaming pass,
OUT/perturbation_samples/run=<run_id>/<shard>.parquet. perturbation_flags and perturbation_tests
are corpus-level, OUT/<table>/run=<run_id>/run.parquet: the view shows the latest run,
`<table>_history` every run.
"""

import pyarrow as pa

from schemas.declare import column, table

_Q = "Mean absolute difference (0-255) between the image and its JPEG re-encode at quality {}."

PERTURBATION_SAMPLES = table(
    "perturbation_samples", "One row per ok sample: pixel-level features that additive noise, blur and one-pixel shortcuts move.", 1,
    column("run_id", pa.string(), "Run that computed the features.", False),
    column("shard", pa.string(), "Shard of the sample.", False),
    column("key", pa.string(), "Sample key.", False),
    column("jpeg_residual_q90", pa.float64(), _Q.format(90)),
    column("jpeg_residual_q75", pa.float64(), _Q.format(75)),
    column("jpeg_residual_q50", pa.float64(), _Q.format(50)),
    column("hf_energy_ratio", pa.float64(), "Share of the luma's 8x8-block DCT AC energy at u+v >= 8 (high frequencies)."),
    column("laplacian_mean_abs", pa.float64(), "Mean |3x3 Laplacian| of the luma (0-255 units)."),
    column("laplacian_std", pa.float64(), "Standard deviation of the luma's 3x3 Laplacian."),
    column("laplacian_kurtosis", pa.float64(), "Excess kurtosis of the luma's 3x3 Laplacian (noise lowers it, edges raise it)."),
    column("noise_sigma", pa.float64(), "Immerkaer (1996) noise standard deviation estimate of the luma (0-255 units)."),
    column("extreme_low_fraction", pa.float64(), "Share of channel values exactly 0."),
    column("extreme_high_fraction", pa.float64(), "Share of channel values exactly 255."),
    column("n_isolated_extreme", pa.int64(), "Pixels of a corner colour ({0,255} per channel) at L-inf >= 64 from their 8-neighbour median."),
    column("extreme_positions", pa.list_(pa.struct([("row", pa.int32()), ("col", pa.int32()), ("color", pa.string()),
                                                     ("contrast", pa.float64())])),
           "Up to 8 isolated corner-colour pixels, highest contrast first, in original image coordinates."),
)

PERTURBATION_FLAGS = table(
    "perturbation_flags", "One row per tested sample: its label, the scores that locate poisoned samples, and the flag.", 1,
    column("run_id", pa.string(), "Run that tested the corpus.", False),
    column("shard", pa.string(), "Shard of the sample.", False),
    column("key", pa.string(), "Sample key.", False),
    column("label", pa.string(), "Class used by the tests: the metadata field's value or 'cluster-<i>' (k-means pseudo-label)."),
    column("template_score", pa.float64(), "Cosine of the sample's high-pass residual with its class's leave-one-out template."),
    column("one_pixel", pa.bool_(), "The sample carries its class's shortcut pixel (same position and corner colour)."),
    column("early_loss", pa.float64(), "Small-CNN loss after one epoch (low = learned first)."),
    column("feature_outliers", pa.list_(pa.string()), "Per-sample features outside the calibrated range, as 'name=value'."),
    column("flagged", pa.bool_(), "Located as perturbed: a failing test's score over its cut, or a feature outlier.", False),
    column("reasons", pa.list_(pa.string()), "Why flagged: test names and feature names."),
    latest_only=True,
)

PERTURBATION_TESTS = table(
    "perturbation_tests", "One row per test, scope and data version: statistic, threshold or p-value, verdict and what it points at.", 2,
    column("run_id", pa.string(), "Run that tested the corpus.", False),
    column("data", pa.string(), "'original', or 'sanitized:<name>' for the re-test after a sanitizer.", False),
    column("scope", pa.string(), "'dataset' (one row per test) or 'class' (one row per test and class).", False),
    column("label", pa.string(), "The class for scope 'class'; null for 'dataset'."),
    column("test", pa.string(), "Test name, e.g. 'linear_probe_residual', 'template_snr', 'one_pixel', 'learning_speed', 'feature_shift' (vs the reference's per-sample features), 'reference_accuracy'; screening: 'removed_vs_kept', 'removed_spectrum_vs_kept', 'one_pixel'.", False),
    column("statistic", pa.float64(), "The test's value (probe: held-out accuracy; template: bias-corrected energy share; feature_shift: the largest scaled Kolmogorov-Smirnov distance; removed_*_vs_kept: removed-view minus kept-view held-out accuracy; screening one_pixel: the excess share of the group carrying the pixel over its best neighbour)."),
    column("threshold", pa.float64(), "Value above which the verdict is 'fail'."),
    column("threshold_source", pa.string(), "How the threshold was set: 'reference' (bootstrap of clean shards), 'kolmogorov' (feature_shift: Kolmogorov's distribution at a 0.001 family-wise rate), 'screening' (no threshold: see p_value), or 'default' (runs before schema version 2)."),
    column("mode", pa.string(), "'reference' (thresholds from a clean reference: a verdict) or 'screening' (no reference: p-values from data-derived nulls, a screening result, not proof)."),
    column("verdict", pa.string(), "'pass', 'fail' (perturbation evidence; in mode 'screening': rejected by Holm's step-down at perturbations.alpha), 'skipped' (see details) or 'context' (screening mode: a statistic without a data-derived null, no verdict).", False),
    column("p_value", pa.float64(), "Screening tests: the p-value under the test's null (class rows: Bonferroni over the classes). Null otherwise."),
    column("p_adjusted", pa.float64(), "Screening tests, dataset rows: Holm-adjusted p-value over the screening tests; 'fail' when <= perturbations.alpha."),
    column("null_model", pa.string(), "How the null distribution was made (screening tests), e.g. McNemar's exact test of the removed-part probe against the kept-content probe."),
    column("affected_classes", pa.list_(pa.string()), "Dataset rows: classes whose own statistic is over the threshold."),
    column("n_located", pa.int64(), "Samples this test locates (its per-sample score over the cut), null if it cannot locate."),
    column("label_source", pa.string(), "Where the classes came from: 'metadata:<field>' or 'kmeans:<model>:k=<k>'."),
    column("n_samples", pa.int64(), "Samples the test ran on."),
    column("details_json", pa.string(), "Test-specific details (chance level, pixel positions, skip reason), as JSON."),
    latest_only=True,
)
