"""Caption randomization strategies (Somepalli et al., NeurIPS 2023): determinism, rates, Unicode."""

import math

import pytest
import torch

from audit.captions.strategies import (
    CaptionPolicy, CaptionVariant, apply, gaussian_noise_hook, minilm_vocab, register_gn_hook,
    vocab_words,
)

VOCAB = ["apple", "banana", "cherry", "delta", "echo", "forest", "garden", "harbor"]
CAPTION = "a red apple on a wooden table"
KEYS = [f"{i:09d}" for i in range(2000)]
ODD = ["", "   ", "\t\n", "猫と犬が遊んでいる", "🐱🐶 cute 🐾", "שלום עולם", "مرحبا بالعالم",
       "e\u0301cole \u200b zero\u200dwidth", "\ufeffbom", "a\u2028b\u2029c", "x" * 5000,
       "\U0001F3F3\uFE0F\u200D\U0001F308 flag"]


def _run(strategy, p=0.1, n=2, seed=0, key="k", caption=CAPTION, meta=None, epoch=0, vocab=VOCAB):
    return apply(CaptionPolicy(strategy, p=p, n=n, seed=seed), key, caption, meta, epoch, vocab)


@pytest.mark.parametrize("strategy", ["rc", "rt", "cwr", "rna"])
def test_deterministic_and_epoch_dependent(strategy):
    a = [_run(strategy, p=1.0, key=k, epoch=3).new for k in KEYS[:200]]
    b = [_run(strategy, p=1.0, key=k, epoch=3).new for k in KEYS[:200]]
    c = [_run(strategy, p=1.0, key=k, epoch=4).new for k in KEYS[:200]]
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) > 150


def test_seed_changes_outputs():
    a = [_run("rna", p=1.0, key=k, seed=1).new for k in KEYS[:100]]
    b = [_run("rna", p=1.0, key=k, seed=2).new for k in KEYS[:100]]
    assert sum(x != y for x, y in zip(a, b)) > 90


@pytest.mark.parametrize("strategy", ["rc", "rt", "cwr", "rna"])
@pytest.mark.parametrize("p", [0.1, 0.4])
def test_share_changed_matches_p(strategy, p):
    changed = sum(_run(strategy, p=p, key=k, epoch=1).changed for k in KEYS)
    mean, sd = p * len(KEYS), math.sqrt(len(KEYS) * p * (1 - p))
    assert abs(changed - mean) <= 4 * sd, (changed, mean)


def test_p_zero_and_none_never_change():
    assert not any(_run(s, p=0.0, key=k).changed for s in ("rc", "rt", "cwr", "rna") for k in KEYS[:200])
    v = _run("none", key="x")
    assert v == CaptionVariant("none", 0, 0, CAPTION, CAPTION, False)


def test_rt_inserts_exactly_n_vocab_words():
    for k in KEYS[:200]:
        v = _run("rt", p=1.0, n=3, key=k)
        words, orig = v.new.split(), CAPTION.split()
        assert len(words) == len(orig) + 3
        extra = list(words)
        for w in orig:
            extra.remove(w)
        assert len(extra) == 3 and all(w in VOCAB for w in extra)


def test_cwr_inserted_words_come_from_caption():
    orig = CAPTION.split()
    for k in KEYS[:200]:
        words = _run("cwr", p=1.0, n=2, key=k).new.split()
        assert len(words) == len(orig) + 2 and set(words) <= set(orig)


def test_rna_inserts_digit_tokens():
    for k in KEYS[:200]:
        words = _run("rna", p=1.0, n=2, key=k).new.split()
        extra = [w for w in words if w not in CAPTION.split()]
        assert len(words) == len(CAPTION.split()) + 2 and len(extra) == 2
        assert all(w.isdigit() and 0 <= int(w) < 10**6 for w in extra)


def test_rc_output_is_vocab_words_of_same_length():
    for k in KEYS[:200]:
        v = _run("rc", p=1.0, key=k)
        assert len(v.new.split()) == len(CAPTION.split()) and all(w in VOCAB for w in v.new.split())
    assert len(_run("rc", p=1.0, caption="").new.split()) == 1


def test_minilm_vocab():
    v = minilm_vocab()
    assert len(v) > 10_000 and v == sorted(set(v))
    assert not any(w.startswith("##") or "[" in w or "]" in w for w in v)
    assert all(w.isalpha() and len(w) >= 2 and w == w.lower() for w in v)
    assert {"apple", "table", "dog"} <= set(v)
    assert minilm_vocab() == v and minilm_vocab() is not v


def test_vocab_words_clip_and_wordpiece():
    clip = ["<|startoftext|>", "<|endoftext|>", "dog</w>", "dog", "cat</w>", "ing", "Car</w>",
            "a</w>", "12</w>", "!</w>", "cats</w>", "do", "dog</w>"]
    assert vocab_words(clip) == ["car", "cat", "cats", "dog"]
    wp = ["[PAD]", "[CLS]", "[unused0]", "##ing", "dog", "Dog", "a", "123", "hello\n", "é", "école"]
    assert vocab_words(wp) == ["dog", "hello", "école"]


def test_mc_picks_among_alternatives_and_covers_them():
    meta = {"caption": "first caption", "captions": ["second one", "third"], "alt_captions": "fourth"}
    seen = set()
    for epoch in range(200):
        v = apply(CaptionPolicy("mc"), "key1", "first caption", meta, epoch, [])
        assert v.new in {"first caption", "second one", "third", "fourth"}
        seen.add(v.new)
    assert seen == {"first caption", "second one", "third", "fourth"}
    one = apply(CaptionPolicy("mc"), "key1", "only", {"caption": "only"}, 0, [])
    assert one.new == "only" and not one.changed
    custom = CaptionPolicy("mc", mc_fields=("blip",))
    got = {apply(custom, "k", "c", {"blip": ["b1", "b2"]}, e).new for e in range(100)}
    assert got == {"c", "b1", "b2"}


@pytest.mark.parametrize("strategy", ["none", "mc", "rc", "rt", "cwr", "rna"])
def test_unicode_and_empty_captions_are_safe(strategy):
    for i, cap in enumerate(ODD):
        for p in (0.0, 1.0):
            v = apply(CaptionPolicy(strategy, p=p), f"key-{i}-\u05e9", cap, {"captions": [cap, "alt"]},
                      0, VOCAB)
            assert isinstance(v.new, str) and v.original == cap
            assert v.changed == (v.new != cap)
    assert _run("cwr", p=1.0, caption="   ").new == "   "
    assert _run("rt", p=1.0, caption="猫と犬", key="x").new.count("猫と犬") == 1


def test_policy_validation_and_missing_vocab():
    with pytest.raises(ValueError):
        CaptionPolicy("shuffle")
    with pytest.raises(ValueError):
        CaptionPolicy("rc", p=1.5)
    with pytest.raises(ValueError):
        _run("rt", p=1.0, vocab=[])


def test_gaussian_noise_hook_statistics():
    h = torch.zeros(64, 77, 128, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    out = gaussian_noise_hook(h, 0.1, generator=g)
    assert out.shape == h.shape and out.dtype == h.dtype and out.device == h.device
    d = out - h
    assert abs(d.mean().item()) < 2e-3 and abs(d.std().item() - 0.1) < 2e-3
    out2 = gaussian_noise_hook(h, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, out2)
    half = gaussian_noise_hook(torch.zeros(4, 8, dtype=torch.float16), 0.5)
    assert half.dtype == torch.float16


def test_register_gn_hook_on_model_output_and_remove():
    from transformers.modeling_outputs import BaseModelOutput

    class Enc(torch.nn.Module):
        def forward(self, x):
            return BaseModelOutput(last_hidden_state=x * 1.0)

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x * 1.0

    x = torch.ones(8, 16, 32)
    enc = Enc()
    handle = register_gn_hook(enc, 0.5)
    noisy = enc(x)
    assert isinstance(noisy, BaseModelOutput) and noisy.last_hidden_state.shape == x.shape
    assert noisy["last_hidden_state"] is noisy.last_hidden_state
    assert abs((noisy.last_hidden_state - x).std().item() - 0.5) < 0.05
    handle.remove()
    assert torch.equal(enc(x).last_hidden_state, x)

    plain = Plain()
    h2 = register_gn_hook(plain, 0.2)
    assert not torch.equal(plain(x), x)
    h2.remove()
    assert torch.equal(plain(x), x)
