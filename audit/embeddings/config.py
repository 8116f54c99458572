"""The `embed:` config section: which models embed every ok sample, where their weights are, the
device and batch. Plain values, importable without torch (the job config parses it);
audit.embeddings.embedder_specs turns it into the models to load.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedConfig:
    enabled: bool = True
    sscd: str = "sscd_distilled"  # 'sscd' (int8), 'sscd_distilled', or 'none'
    sscd_torchscript: str = ""  # path to an SSCD TorchScript file: used instead of ONNX
    sscd_size: int = 288  # square input side: SSCD's recommended scale, square so images batch
    clip_model: str = "ViT-B-32"
    clip_checkpoint: str = ""  # local open_clip checkpoint file
    clip_pretrained: str = ""  # open_clip pretrained tag already in the local cache
    clip_random_init: bool = False  # tests only: real code path, random weights
    captions: bool = True  # all-MiniLM-L6-v2 caption embeddings
    batch_size: int = 64
    device: str = "auto"  # 'auto' = every visible CUDA GPU, else cpu
    vector_files: tuple[str, ...] = ("npy", "fbin")
    accelerator: str = ""  # Beam resource hint for GPU workers, e.g. 'type:nvidia-l4;count:1;install-nvidia-driver'
