"""Unlearnable (availability-poisoned) data: per-sample features, dataset and class probes, the small
CNN, reference-bootstrap and screening verdicts, the image sanitizers and class-wise deconvolution,
the `perturbations:` config, and one labelled image set's whole audit with its sanitizer trial.
"""
