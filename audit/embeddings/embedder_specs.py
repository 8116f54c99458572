"""What to embed with: paths and names only, so a spec pickles cheaply to every worker.

`EmbedConfig` (the job config's `embed:` section, audit.embeddings.config, importable from here)
-> `plan_embedders()` -> `EmbedderSpec`s with their model ids known before any weights load
(completion markers are per model).
`EmbedderSpec.load(device)` builds the embedders once per worker (Beam DoFn.setup), the
RunInference ModelHandler pattern. CLIP without weights is not loaded at all: the plan says
why it was skipped, and the run summary prints that line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from audit.embeddings.config import EmbedConfig
from audit.embeddings.embedders import Embedder


@dataclass(frozen=True)
class EmbedderSpec:
    kind: str  # 'sscd_onnx' | 'sscd_torchscript' | 'clip' | 'minilm'
    model_ids: tuple[str, ...]  # one per embedder this spec loads (CLIP: image and text)
    options: tuple[tuple[str, object], ...] = field(default=())

    def load(self, device) -> list[Embedder]:
        """The embedders on `device` (a torch.device); the model modules load here, on first use."""
        o = dict(self.options)
        if self.kind == "sscd_onnx":
            from audit.embeddings.sscd_models import SscdOnnx
            return [SscdOnnx(o["variant"], o["size"])]
        if self.kind == "sscd_torchscript":
            from audit.embeddings.sscd_models import SscdTorchScript
            return [SscdTorchScript(o["path"], device, o["size"])]
        if self.kind == "clip":
            from audit.embeddings.clip_models import OpenClip
            c = OpenClip(o["model"], o["checkpoint"] or None, o["pretrained"] or None, o["random_init"], device)
            return [c.image, c.text]
        if self.kind == "minilm":
            from audit.embeddings.caption_models import MiniLmCaptions
            return [MiniLmCaptions(device=device)]
        raise ValueError(f"unknown embedder kind {self.kind!r}")


def model_slug(model_id: str) -> str:
    """A model id as one file-name component."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id).strip("-")


def plan_embedders(cfg: EmbedConfig) -> tuple[list[EmbedderSpec], list[str]]:
    """The specs to run and human-readable notes about what was skipped and why."""
    specs, notes = [], []
    if not cfg.enabled:
        return [], ["embeddings: disabled (embed.enabled: false)"]
    if cfg.sscd_torchscript:
        name = os.path.basename(cfg.sscd_torchscript)
        specs.append(EmbedderSpec("sscd_torchscript", (f"sscd:torchscript:{name}:{cfg.sscd_size}",),
                                  (("path", cfg.sscd_torchscript), ("size", cfg.sscd_size))))
    elif cfg.sscd != "none":
        specs.append(EmbedderSpec("sscd_onnx", (f"sscd:{cfg.sscd}:onnx:{cfg.sscd_size}",),
                                  (("variant", cfg.sscd), ("size", cfg.sscd_size))))
    if cfg.clip_checkpoint or cfg.clip_pretrained or cfg.clip_random_init:
        from audit.embeddings.clip_models import weights_tag  # open_clip and torch: only when CLIP is configured
        _, tag = weights_tag(cfg.clip_checkpoint or None, cfg.clip_pretrained or None, cfg.clip_random_init)
        base = f"clip:{cfg.clip_model}:{tag}"
        specs.append(EmbedderSpec("clip", (base + ":image", base + ":text"), (
            ("model", cfg.clip_model), ("checkpoint", cfg.clip_checkpoint),
            ("pretrained", cfg.clip_pretrained), ("random_init", cfg.clip_random_init))))
        if cfg.clip_random_init and not (cfg.clip_checkpoint or cfg.clip_pretrained):
            notes.append("CLIP: RANDOM weights (embed.clip_random_init) - vectors are for testing only")
    else:
        notes.append("CLIP skipped: no weights configured (--clip-checkpoint PATH or embed.clip_pretrained TAG)")
    if cfg.captions:
        specs.append(EmbedderSpec("minilm", ("minilm:all-MiniLM-L6-v2",)))
    return specs, notes


def visible_devices(setting: str = "auto") -> list:
    """'auto': one torch.device per visible CUDA GPU, else the CPU; or an explicit 'cuda:1' / 'cpu'."""
    import torch
    if setting != "auto":
        return [torch.device(setting)]
    if torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [torch.device("cpu")]
