"""Encoded image bytes -> model-ready batches, on a CUDA device (nvJPEG) or on the CPU.

Input: a list of encoded images (bytes) and a torch device.
Output: `DecodedBatch`: uint8 CHW RGB tensors on the device for the images that decoded, their
positions in the input, and (position, error_type, message) for the ones that did not.
On CUDA, JPEGs are decoded by nvJPEG (`torchvision.io.decode_jpeg(device='cuda')`) in one
batched call; other formats, and any JPEG nvJPEG refuses, fall back to Pillow on the CPU and
are copied from pinned memory without blocking. On the CPU everything goes through Pillow
(EXIF orientation and alpha-on-white applied exactly as at ingest), under ingest's decode
guards (`audit.ingest.image_decode.decode_rgb`: bomb, format, geometry and memory checks from the
header). With `min_side` (the model's input side) each image is reduced right after its own
decode (JPEG draft, integer box reduction) to a short side of at most about 4 x min_side, so a
batch holds small images whatever sizes their headers declare; on CUDA only JPEGs that need no
reduction go to nvJPEG. An image that fails here is an (index, 'UndecodableImage', message) entry.
`resize_square` / `resize_center_crop` run on the same device with the same torch ops on
CPU and GPU, so both give the same embeddings up to float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from PIL import Image

from audit.ingest.image_decode import ImageRejected, open_image, pil_rgb, reduced_rgb

MIN_SIDE = 8
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DecodedBatch:
    images: list[torch.Tensor] = field(default_factory=list)  # uint8 [3, H, W] on the device
    index: list[int] = field(default_factory=list)  # position of each image in the input list
    errors: list[tuple[int, str, str]] = field(default_factory=list)


def _is_jpeg(data) -> bool:
    return isinstance(data, (bytes, bytearray)) and data[:3] == b"\xff\xd8\xff"


def _nvjpeg_ok(data: bytes, min_side: int | None) -> bool:
    """A JPEG nvJPEG may take at full size: passes the header guards and needs no reduction."""
    if not _is_jpeg(data):
        return False
    try:
        w, h = open_image(data).size
    except Exception:  # refused or unreadable: Pillow's path below makes the error row
        return False
    return min_side is None or min(w, h) < 4 * min_side


def _cpu_tensor(data, pin: bool, min_side: int | None) -> torch.Tensor:
    """uint8 [3, H, W] viewing HWC memory (channels-last), the layout torch resizes fastest.
    `data`: encoded bytes, or an image decoded once already (PIL, audit.ingest.shard_runner)."""
    rgb = reduced_rgb(data, min_side) if isinstance(data, Image.Image) else pil_rgb(data, min_side)
    t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    return t.pin_memory() if pin else t


def decode_batch(datas: list[bytes], device: torch.device, min_side: int | None = None) -> DecodedBatch:
    out = DecodedBatch()
    slots: dict[int, torch.Tensor] = {}
    pending = list(range(len(datas)))
    if device.type == "cuda":
        jpegs = [i for i in pending if _nvjpeg_ok(datas[i], min_side)]
        if jpegs:
            from torchvision.io import ImageReadMode, decode_jpeg
            try:
                decoded = decode_jpeg([torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in jpegs],
                                      mode=ImageReadMode.RGB, device=device)
                slots.update(zip(jpegs, decoded))
            except RuntimeError:
                pass  # one bad JPEG fails the batched call: those images go through Pillow below
        pending = [i for i in pending if i not in slots]
    for i in pending:
        try:
            t = _cpu_tensor(datas[i], device.type == "cuda", min_side)
            slots[i] = t.to(device, non_blocking=True)
        except ImageRejected as e:
            out.errors.append((i, "UndecodableImage", f"{e.error_type}: {e.message}"))
        except Exception as e:  # anything else about one image (a device copy failing) is that image's row
            out.errors.append((i, "UndecodableImage", f"{type(e).__name__}: {e}"))
    for i in sorted(slots):
        t = slots[i]
        if min(t.shape[1:]) < MIN_SIDE:
            out.errors.append((i, "ImageTooSmall", f"{t.shape[2]}x{t.shape[1]} is under {MIN_SIDE} pixels"))
            continue
        out.images.append(t)
        out.index.append(i)
    return out


def _resize(t: torch.Tensor, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Bilinear with antialias. On the CPU, uint8 channels-last input takes torch's fast uint8
    kernel (within one intensity level of the float result); on CUDA the maths is float."""
    x = t.unsqueeze(0)
    if not (x.device.type == "cpu" and x.dtype == torch.uint8):
        x = x.float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    if dtype == torch.uint8 and y.dtype != torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(dtype)


def resize_square(images: list[torch.Tensor], size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Each image squashed to size x size (SSCD's batching recipe): [N,3,S,S] in 0..255."""
    return torch.stack([_resize(t, size, size, dtype) for t in images])


def resize_center_crop(images: list[torch.Tensor], size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Short edge to `size`, then the central size x size crop (CLIP's recipe): 0..255."""
    out = []
    for t in images:
        h, w = t.shape[1:]
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        r = _resize(t, nh, nw, dtype)
        top, left = (nh - size) // 2, (nw - size) // 2
        out.append(r[:, top:top + size, left:left + size])
    return torch.stack(out)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """0..255 float batch -> (x/255 - mean) / std, per channel."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x / 255.0 - m) / s
