"""A text-to-image diffusion checkpoint, loaded for scoring (Wen et al.) and sampling.

Input: a diffusers checkpoint folder with unet/, text_encoder/, tokenizer/, scheduler/ and,
for latent models, vae/ (without vae/ the model works in pixel space, images in [-1, 1]).
The text encoder is any transformers model whose last hidden state feeds the UNet's
cross-attention (CLIPTextModel for Stable Diffusion, a BERT such as all-MiniLM-L6-v2 for the
demo model). Prompts, the empty one included, are encoded the way diffusers'
StableDiffusionPipeline encodes them: padded to the tokenizer's model_max_length, with an
attention mask only when the encoder's config says `use_attention_mask`.

Only safetensors weights are read (never a pickle): a folder with .bin files only, or a single
file (.ckpt, .pt) instead of a folder, fails with a one-line `UsageError` (CLI exit 2) before
anything is loaded. Output of `predict_eps`: the UNet's noise prediction as epsilon, whatever the
scheduler's prediction_type (epsilon, v_prediction or sample), in float32.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from audit.memorization.config import check_folder, checkpoint_id  # noqa: F401 (re-exported)

def image_pixels(images: list, size: int) -> torch.Tensor:
    """PIL images -> (n, 3, size, size) float32 in [-1, 1]: shorter side resized to `size`
    (bicubic), then center-cropped, as diffusers' text-to-image training script prepares images."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        out[i] = np.asarray(im.crop((left, top, left + size, top + size)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1


def _scheduler(folder: Path):
    import diffusers
    cfg = json.loads((folder / "scheduler_config.json").read_text())
    cls = getattr(diffusers, cfg.get("_class_name", "DDPMScheduler"), None)
    if cls is None or not hasattr(cls, "add_noise"):
        raise ValueError(f"unknown scheduler class {cfg.get('_class_name')!r} in {folder}")
    return cls.from_pretrained(str(folder))


def _dtype(device: torch.device, dtype: str | None) -> torch.dtype:
    if dtype:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@dataclass
class DiffusionModel:
    """unet, text encoder, tokenizer, scheduler and optional VAE, on one device, frozen."""
    unet: object
    text_encoder: object
    tokenizer: object
    scheduler: object
    vae: object | None
    device: torch.device
    dtype: torch.dtype
    model_id: str

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: str | None = None) -> "DiffusionModel":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import AutoModel, AutoTokenizer
        p = check_folder(path)
        device = torch.device(device)
        dt = _dtype(device, dtype)
        unet = UNet2DConditionModel.from_pretrained(str(p / "unet"), use_safetensors=True, torch_dtype=dt,
                                                    low_cpu_mem_usage=False)
        text = AutoModel.from_pretrained(str(p / "text_encoder"), use_safetensors=True, dtype=dt)
        vae = (AutoencoderKL.from_pretrained(str(p / "vae"), use_safetensors=True, torch_dtype=dt, low_cpu_mem_usage=False)
               if (p / "vae").is_dir() else None)
        for m in (unet, text, vae):
            if m is not None:
                m.to(device=device).eval().requires_grad_(False)
        return cls(unet, text, AutoTokenizer.from_pretrained(str(p / "tokenizer")),
                   _scheduler(p / "scheduler"), vae, device, dt, checkpoint_id(p))

    # -- geometry -------------------------------------------------------------------------------
    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1

    @property
    def resolution(self) -> int:
        """Image side in pixels the model works at."""
        s = self.unet.config.sample_size
        return (s if isinstance(s, int) else s[0]) * self.vae_scale

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = self.unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else s
        return (self.unet.config.in_channels, h, w)

    # -- text -----------------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> dict:
        return self.tokenizer(list(prompts), padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length, return_tensors="pt")

    @property
    def uses_attention_mask(self) -> bool:
        return bool(getattr(self.text_encoder.config, "use_attention_mask", False))

    def encode_tokens(self, tokens: dict) -> torch.Tensor:
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device) if self.uses_attention_mask else None
        return self.text_encoder(ids, attention_mask=mask)[0]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(n, max_length, hidden) last hidden states, in the model dtype."""
        with torch.no_grad():
            return self.encode_tokens(self.tokenize(prompts))

    def empty_embedding(self) -> torch.Tensor:
        """(1, L, D): the empty prompt, encoded as the pipeline encodes its unconditional half."""
        if not hasattr(self, "_empty"):
            self._empty = self.encode_prompts([""])
        return self._empty

    # -- images ---------------------------------------------------------------------------------
    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, R, R) floats in [-1, 1] -> x0 the UNet denoises (VAE latent mean when latent)."""
        x = pixels.to(self.device, self.dtype)
        if self.vae is None:
            return x
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def to_pixels(self, x0: torch.Tensor) -> np.ndarray:
        """x0 in model space -> (n, R, R, 3) uint8 images."""
        with torch.no_grad():
            if self.vae is not None:
                x0 = self.vae.decode(x0.to(self.dtype) / self.vae.config.scaling_factor).sample
        x = ((x0.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    # -- noise ----------------------------------------------------------------------------------
    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ac = self.scheduler.alphas_cumprod.to(self.device)[t.to(self.device)].float()
        return ac.sqrt().view(-1, 1, 1, 1), (1 - ac).sqrt().view(-1, 1, 1, 1)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The UNet's raw output (in the scheduler's prediction_type) for rows (x_t, t, emb)."""
        t = t.to(self.device).expand(len(x_t)) if t.ndim == 0 else t.to(self.device)
        return self.unet(x_t.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype)).sample

    def as_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Raw UNet output -> epsilon, float32, for epsilon, v_prediction and sample models."""
        out = out.float()
        kind = self.scheduler.config.get("prediction_type", "epsilon")
        if kind == "epsilon":
            return out
        a, s = self.alpha_sigma(t.expand(len(x_t)) if t.ndim == 0 else t)
        if kind == "v_prediction":
            return s * x_t.float() + a * out
        if kind == "sample":
            return (x_t.float() - a * out) / s
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Epsilon predicted for each row (x_t, t, emb), float32."""
        return self.as_eps(self.predict(x_t, t, emb), x_t, t)
