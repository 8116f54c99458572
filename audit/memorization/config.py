"""The `memorization:` config section and the scoring settings inside it, importable without
torch or diffusers (the job config parses them; audit.memorization.scoring, audit.memorization.diffusion_sampling and
audit.memorization.shard use them).

`MemorizationConfig` (model folder, mode, device, batch, calibration, reference shards,
action) holds a `ScoreConfig` (timesteps and seeds of Wen et al.'s d, prompt-mode steps),
which holds a `SamplerConfig` (diffusers scheduler, steps, guidance). Failure: `ValueError` at
construction for an unknown mode or action, no timestep or seed, or batch_rows < 2.
`checkpoint_id` / `check_folder`: a diffusers checkpoint folder checked (safetensors only, never
a pickle: UsageError otherwise) and named by a digest, without loading it (the run's plan needs it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from audit.io.user_errors import UsageError


@dataclass(frozen=True)
class SamplerConfig:
    inference_steps: int = 50
    guidance_scale: float = 7.5
    sampler: str = "DDIMScheduler"   # a diffusers scheduler class, or "checkpoint" for the folder's own


@dataclass(frozen=True)
class ScoreConfig:
    timesteps: tuple[int, ...] = (900, 950, 999)   # pair mode: high-noise timesteps (why: audit.memorization.scoring)
    seeds: tuple[int, ...] = (0, 1)                     # noise seeds, averaged
    first_steps: int = 1                                 # prompt mode: denoising steps scored
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    batch_rows: int = 128                                # UNet rows per call, both halves counted

    def __post_init__(self):
        if not self.timesteps or not self.seeds:
            raise ValueError("memorization needs at least one timestep and one seed")
        if self.batch_rows < 2:
            raise ValueError("batch_rows must be at least 2 (one conditional, one unconditional row)")


MODES = ("pair", "prompt")


@dataclass(frozen=True)
class MemorizationConfig:
    model: str = ""                    # diffusers checkpoint folder; "" = the stage is off
    mode: str = "pair"                 # 'pair': with the training image; 'prompt': caption only
    device: str = "auto"               # 'auto' = cuda when present, else cpu
    dtype: str = ""                    # '' = bfloat16 on GPU, float32 on CPU
    pairs_per_batch: int = 64          # samples read and scored together
    score: ScoreConfig = field(default_factory=ScoreConfig)
    calibration_method: str = "fpr"    # 'fpr' (level in (0,1)) or 'percentile' (level in (0,100))
    calibration_level: float = 0.01
    reference_shards: tuple[str, ...] = ()   # shards taken as non-memorized; () = every scored shard
    trigger_tokens_max: int = 200      # flagged captions explained, highest scores first
    action: str = "drop"               # flagged pairs: 'drop' (decisions) or 'keep' (clean randomizes their captions)
    accelerator: str = ""              # Beam resource hint for the scoring workers ('' = none)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"memorization.mode must be one of {MODES}, not {self.mode!r}")
        if self.action not in ("drop", "keep"):
            raise ValueError(f"memorization.action must be 'drop' or 'keep', not {self.action!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.model)

    def digest(self) -> str:
        """Names what changes the scores (mode and score settings), not calibration."""
        key = json.dumps({"mode": self.mode, "score": asdict(self.score)}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:8]


COMPONENTS = ("unet", "text_encoder", "tokenizer", "scheduler")


def _require_safetensors(folder: Path) -> None:
    if not any(folder.glob("*.safetensors")):
        raise UsageError(f"{folder} has no .safetensors weights; ShardGuard never unpickles "
                         "weights (convert the .bin files to safetensors first)")


def checkpoint_id(path: str | os.PathLike) -> str:
    """'<folder name>-<digest>': a digest of the UNet and scheduler configs and the head of the weights."""
    p = check_folder(path)
    h = hashlib.sha256((p / "unet" / "config.json").read_bytes() + (p / "scheduler" / "scheduler_config.json").read_bytes())
    for w in sorted((p / "unet").glob("*.safetensors")):
        with open(w, "rb") as f:
            h.update(f.read(1 << 20))
        h.update(str(w.stat().st_size).encode())
    return f"{p.resolve().name}-{h.hexdigest()[:10]}"


def check_folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_file():
        raise UsageError(f"diffusion model {str(p)!r} is a file; pass a diffusers checkpoint folder with "
                         "safetensors weights (single .ckpt/.pt files are pickles and are never loaded)")
    if not p.is_dir():
        raise UsageError(f"diffusion checkpoint folder {str(p)!r} does not exist")
    missing = [c for c in COMPONENTS if not (p / c).is_dir()]
    if missing:
        raise UsageError(f"diffusion checkpoint {str(p)!r} lacks {', '.join(missing)}/ "
                                f"(needs {', '.join(COMPONENTS)}/, and vae/ for latent models)")
    for c in ("unet", "text_encoder") + (("vae",) if (p / "vae").is_dir() else ()):
        _require_safetensors(p / c)
    return p
