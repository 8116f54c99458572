"""Which tokens of a flagged caption trigger memorization (Wen et al., Sec. 4.3).

Token significance = the norm of the gradient of d (the memorization score) with respect to
each token's input embedding, averaged over the scored timesteps and seeds: the tokens whose
embedding moves d most are the ones the model keyed the memorized image to. Word pieces are
merged back into words (their scores summed) and scores are normalized to sum to 1 over the
caption's words; special and padding tokens are left out.

Input: a DiffusionModel, captions and, for pair mode, their images' pixels in [-1, 1] (prompt
mode: the first denoising step from the seeds' latents). Output per caption: a list of
(word, score) in caption order.
"""

from __future__ import annotations

import torch

from audit.memorization.diffusion_sampling import make_sampler, seed_noise
from audit.memorization.scoring import ScoreConfig


def _merge_pieces(tokens: list[str], scores: list[float]) -> list[tuple[str, float]]:
    """BERT '##piece' joins the previous word; CLIP BPE 'piece' without '</w>' joins the next."""
    words: list[list] = []
    bpe = any(t.endswith("</w>") for t in tokens)
    open_bpe = False
    for tok, sc in zip(tokens, scores):
        if tok.startswith("##") and words:
            words[-1][0] += tok[2:]
            words[-1][1] += sc
            continue
        if open_bpe and words:
            words[-1][0] += tok.removesuffix("</w>")
            words[-1][1] += sc
        else:
            words.append([tok.removesuffix("</w>"), sc])
        open_bpe = bpe and not tok.endswith("</w>")
    return [(w, s) for w, s in words]


def _d(model, e_caption, cfg: ScoreConfig, pixels) -> torch.Tensor:
    """Sum of d over the rows (captions x timesteps x seeds) with gradients to e_caption."""
    n = len(e_caption)
    empty = model.empty_embedding().expand(n, -1, -1)
    total = 0
    if pixels is not None:
        x0 = model.to_model_space(pixels).float()
        noise = seed_noise(model, list(cfg.seeds))
        for t in cfg.timesteps:
            tt = torch.full((n,), t, device=model.device)
            for s in range(len(cfg.seeds)):
                x_t = model.scheduler.add_noise(x0, noise[s].expand_as(x0), tt)
                eps = model.predict_eps(torch.cat([x_t, x_t]), torch.cat([tt, tt]), torch.cat([e_caption, empty]))
                total = total + (eps[:n] - eps[n:]).flatten(1).norm(dim=1).sum()
        return total
    sched = make_sampler(model, cfg.sampler)
    t = sched.timesteps[0]
    for s in cfg.seeds:
        x = sched.scale_model_input(seed_noise(model, [s] * n) * sched.init_noise_sigma, t)
        eps = model.predict_eps(torch.cat([x, x]), t, torch.cat([e_caption, empty]))
        total = total + (eps[:n] - eps[n:]).flatten(1).norm(dim=1).sum()
    return total


def token_influence(model, captions: list[str], cfg: ScoreConfig, pixels=None) -> list[list[tuple[str, float]]]:
    """Per caption, (word, normalized gradient significance) in caption order."""
    if not captions:
        return []
    tokens = model.tokenize(captions)
    layer = model.text_encoder.get_input_embeddings()
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        leaf = output.detach().requires_grad_(True)
        captured["e"] = leaf
        return leaf

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            e_caption = model.encode_tokens(tokens)
            handle.remove()
            _d(model, e_caption, cfg, pixels).backward()
    finally:
        handle.remove()
    grad = captured["e"].grad.float().norm(dim=-1).cpu()        # (n, L)
    special = set(model.tokenizer.all_special_ids)
    out = []
    for i in range(len(captions)):
        ids = tokens["input_ids"][i].tolist()
        mask = tokens["attention_mask"][i].tolist()
        keep = [k for k, (tid, m) in enumerate(zip(ids, mask)) if m and tid not in special]
        toks = model.tokenizer.convert_ids_to_tokens([ids[k] for k in keep])
        words = _merge_pieces(toks, [float(grad[i, k]) for k in keep])
        total = sum(s for _, s in words) or 1.0
        out.append([(w, s / total) for w, s in words])
    return out
