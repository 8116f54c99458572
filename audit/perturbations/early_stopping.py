"""Early stopping as a defence: the epoch at which training on the audited data teaches the most
about the clean reference.

Why: the source papers argue a poison must be judged by the *peak* clean-test accuracy over
training, not the final one, since early stopping defeats many (Sandoval-Segura et al. 2023,
"What can we learn from unlearnable datasets?"): a network trained on poisoned data can learn
useful content before the shortcut takes over. A team that must train on data the audit found
perturbed can stop where the accuracy on the clean reference peaks.

Input: the `reference_accuracy` test's details (audit.perturbations.probes.reference_accuracy:
`epoch_accuracy`, the small CNN's accuracy on the clean reference after each epoch of training on
the audited data, original or sanitized). Output: `recommendation(...)` -> a dict (data, stop at
epoch, of how many, reference accuracy at the peak and at the end, the curve), or None when the
details hold no curve (a run before this field existed, or a skipped test). Nothing here trains.
The recommendation is written only for a failing verdict backed by a reference (screening has no
clean labelled data to validate an epoch on): pipelines.perturbations puts `for_outcome`'s in
OUT/exports/perturbation_sanitizer.json (`training_recommendation`), and the report shows it
from there (audit.report.run_report).
"""

from __future__ import annotations

import math


def peak(curve: list[float]) -> tuple[int, float]:
    """(1-based epoch, accuracy) of the curve's maximum; the earliest epoch on ties."""
    best = max(range(len(curve)), key=lambda i: (curve[i], -i))
    return best + 1, float(curve[best])


def recommendation(details: dict | None, data: str) -> dict | None:
    curve = [float(a) for a in (details or {}).get("epoch_accuracy") or [] if not math.isnan(float(a))]
    if not curve:
        return None
    epoch, best = peak(curve)
    return {"data": data, "stop_at_epoch": epoch, "of_epochs": len(curve),
            "reference_accuracy_at_peak": round(best, 4), "final_reference_accuracy": round(curve[-1], 4),
            "gain_over_final": round(best - curve[-1], 4), "epoch_accuracy": curve}


def for_outcome(outcome) -> dict | None:
    """The recommendation for the data the clean job writes (audit.perturbations.perturbation_audit.
    AuditOutcome): the chosen sanitizer's re-test curve, else the original data's."""
    versions = [("original", outcome.verdicts)]
    if outcome.chosen is not None:
        versions.insert(0, (f"sanitized:{outcome.chosen.sanitizer}", outcome.chosen.verdicts))
    for data, verdicts in versions:
        for v in verdicts:
            if v.result.test == "reference_accuracy" and not v.result.skipped:
                rec = recommendation(v.result.details, data)
                if rec is not None:
                    return rec
    return None
