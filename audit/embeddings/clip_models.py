"""CLIP image and text embeddings with open_clip, any model name.

Weights come from a local .safetensors checkpoint file (`checkpoint`; anything else, such as a
pickled .pt/.ckpt, is refused with a one-line `UsageError` before it is opened by torch: unpickling
can run code) or an open_clip pretrained tag already in the local cache (HF_HUB_OFFLINE
is respected: nothing is downloaded at run time). `random_init=True` builds the model with
random weights: the real code path, for tests only; its model_id says 'random-init' so such
vectors can never pass for real ones.
Image input: encoded bytes, decoded with nvJPEG on CUDA or Pillow on CPU
(audit.embeddings.image_tensors), short edge to the model's image size, center crop, the model's
mean/std; bf16 autocast on CUDA. Text input: captions, the model's tokenizer (truncated to
its context length). Output: L2-normalized float32 vectors.
"""

from __future__ import annotations

import hashlib
import os

import torch

from audit.embeddings.embedders import Embedded, Embedder
from audit.io.user_errors import UsageError
from audit.embeddings.image_tensors import decode_batch, normalize, resize_center_crop


def require_safetensors(path: str) -> None:
    """Refuse, reading only its first bytes, a CLIP checkpoint that is not a safetensors file
    (an 8-byte little-endian header length, then the JSON header) named *.safetensors (open_clip
    picks its loader by the name)."""
    if not os.path.isfile(path):
        raise UsageError(f"CLIP checkpoint {path!r} does not exist (--clip-checkpoint / embed.clip_checkpoint)")
    with open(path, "rb") as f:
        head = f.read(9)
    size = os.path.getsize(path)
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if not (path.endswith(".safetensors") and head[8:9] == b"{" and 0 < n <= size - 8):
        raise UsageError(f"CLIP checkpoint {path!r} is not a .safetensors file; pickled checkpoints (.pt, .ckpt, "
                         ".bin) are refused because unpickling can run code: convert it on a trusted machine "
                         "(safetensors.torch.save_file(state_dict, 'model.safetensors'))")


def checkpoint_tag(path: str) -> str:
    """'ckpt-' + a digest of the file's first MiB: names the weights in the model id."""
    require_safetensors(path)
    with open(path, "rb") as f:
        return "ckpt-" + hashlib.sha256(f.read(1 << 20)).hexdigest()[:10]


def weights_tag(checkpoint: str | None, pretrained: str | None, random_init: bool) -> tuple[str | None, str]:
    """(what open_clip should load, the tag naming those weights in the model id)."""
    if checkpoint:
        return checkpoint, checkpoint_tag(checkpoint)
    if pretrained:
        return pretrained, pretrained
    if random_init:
        return None, "random-init"
    raise ValueError("CLIP needs weights: set clip.checkpoint (a local file) or clip.pretrained "
                     "(an open_clip tag in the local cache)")


class OpenClip:
    """One loaded open_clip model; `.image` and `.text` are its two embedders."""

    def __init__(self, model_name: str = "ViT-B-32", checkpoint: str | None = None,
                 pretrained: str | None = None, random_init: bool = False,
                 device: str | torch.device = "cpu"):
        import open_clip
        source, tag = weights_tag(checkpoint, pretrained, random_init)
        self.device = torch.device(device)
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=source, device=self.device)
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        size = model.visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else size
        self.mean = getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        self.std = getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.dim = model.text_projection.shape[1] if hasattr(model, "text_projection") and \
            model.text_projection is not None else model.visual.output_dim
        self.id_base = f"clip:{model_name}:{tag}"
        self.autocast = self.device.type == "cuda"
        self.image = _ClipImage(self)
        self.text = _ClipText(self)


class _ClipImage(Embedder):
    modality = "image"

    def __init__(self, clip: OpenClip):
        self.clip, self.dim, self.model_id = clip, clip.dim, clip.id_base + ":image"
        self.input_side = clip.image_size

    @torch.inference_mode()
    def embed(self, items: list) -> Embedded:
        c = self.clip
        batch = decode_batch(items, c.device, c.image_size)
        if not batch.images:
            return Embedded.empty(self.dim, batch.errors)
        x = normalize(resize_center_crop(batch.images, c.image_size), c.mean, c.std)
        with torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=c.autocast):
            y = c.model.encode_image(x.contiguous(memory_format=torch.channels_last))
        return Embedded.from_raw(y.float().cpu().numpy(), batch.index, batch.errors)


class _ClipText(Embedder):
    modality = "text"

    def __init__(self, clip: OpenClip):
        self.clip, self.dim, self.model_id = clip, clip.dim, clip.id_base + ":text"

    @torch.inference_mode()
    def embed(self, items: list[str]) -> Embedded:
        c = self.clip
        tokens = c.tokenizer(list(items)).to(c.device)
        with torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=c.autocast):
            y = c.model.encode_text(tokens)
        return Embedded.from_raw(y.float().cpu().numpy(), list(range(len(items))))
