"""Train the `demo` config of an audio model on the synthetic sounds of `mmedge.data.sounds`.

    python -m mmedge.models.train soundnet [--epochs N] [--batch-size B] [--lr LR] [--threads T]
                                           [--out WEIGHTS.pt] [--checkpoint CKPT] [--resume] [--seed S]
                                           [--replace-shipped]
    python -m mmedge.models.train voice-encoder ...

Cross-entropy on the class head (`objects` for SoundNet, `logits` for the voice
encoder), Adam with a warm-up + cosine learning-rate schedule computed from the
global step (so a resumed run follows the same schedule). The models average
over time, so training uses random fixed-length crops (`--crop-seconds`) to batch
clips; validation runs on the whole clips, one at a time, as the runtime does.

The model input is made by the PyTorch reference front-end: the raw waveform for
SoundNet, `models.voice_encoder.spectrogram` for the voice encoder.

After every epoch a checkpoint (model, optimizer, best state so far) is written
atomically, and whenever the validation accuracy improves the weights file is
rewritten atomically with that model's `state_dict()` only (plain tensors,
`torch.load(..., weights_only=True)` loads it). `--resume` continues from the
checkpoint. Both go to ./mmedge-train/ by default; the shipped weights in
models/weights/ are written only with --replace-shipped (models/train.py).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmedge.models.checkpoint import save_checkpoint
from mmedge.data import sounds
from mmedge.models import zoo
from mmedge.models.train import add_output_args, installed_hint, output_paths

CONFIG = "demo"
MODELS = ("soundnet", "voice-encoder")


def model_input(name: str, cfg: Any, waveform: Tensor) -> Tensor:
    """The graph input for a batch of waveforms [B, T] (the PyTorch reference front-end)."""
    if name == "voice-encoder":
        from mmedge.models.voice_encoder import spectrogram

        return spectrogram(waveform, cfg)
    return waveform


def class_logits(name: str, outputs: tuple[Tensor, ...]) -> Tensor:
    """The class head among a model's outputs (the manifest's `class_output`)."""
    return outputs[0] if name == "soundnet" else outputs[1]


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m mmedge.models.train {argv[0]}",
                                description=f"Train the {argv[0]} `{CONFIG}` config on mmedge.data.sounds.")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_output_args(p)  # --out, --checkpoint, --replace-shipped (models/train.py)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop-seconds", type=float, default=1.0, help="training crop length")
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training clips")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation clips")
    args = p.parse_args(argv[1:])
    for k in ("epochs", "batch_size", "threads"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if not args.lr > 0:
        p.error("--lr must be > 0")
    return args



def _plain_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0))))


@torch.no_grad()
def accuracy(name: str, model: nn.Module, clips: list[sounds.Clip]) -> float:
    """Top-1 on whole clips, one at a time (batch 1, eval mode), as the runtime runs them."""
    model.eval()
    cfg = model.config
    correct = 0
    for clip in clips:
        x = model_input(name, cfg, torch.from_numpy(clip.audio)[None])
        correct += int(class_logits(name, model(x)).argmax(1).item() == clip.label)
    return correct / max(1, len(clips))


def main(argv: list[str]) -> None:
    name = argv[0]
    if name not in MODELS:
        raise SystemExit(f"error: train_audio trains {' | '.join(MODELS)}, not {name!r}")
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    spec = zoo.get(name)
    cfg = spec.config(CONFIG)
    out, ckpt_path = output_paths(args, name, CONFIG)  # never the shipped weights without --replace-shipped
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    sr, crop = cfg.sample_rate, int(round(args.crop_seconds * cfg.sample_rate))
    if crop < cfg.min_samples:
        raise SystemExit(f"error: --crop-seconds {args.crop_seconds} is shorter than the model's "
                         f"{cfg.min_samples} samples")
    t0 = time.time()
    train = sounds.clips("train", sr, args.limit_train, min_samples=crop)
    val = sounds.clips("val", sr, args.limit_val, min_samples=cfg.min_samples)
    log(f"{name} {CONFIG}: {len(train)} training / {len(val)} validation clips at {sr} Hz "
        f"({time.time() - t0:.1f} s to generate)")

    torch.manual_seed(args.seed)
    model = spec.build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_epoch, best_acc, best_state, history = 0, -1.0, None, []
    if args.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck.get("model_name") != name or ck.get("config") != CONFIG:
            raise SystemExit(f"error: {ckpt_path} is a checkpoint of {ck.get('model_name')} "
                             f"{ck.get('config')}, not {name} {CONFIG}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, best_acc, best_state, history = ck["epoch"], ck["best_acc"], ck["best_state"], ck["history"]
        log(f"resumed from {ckpt_path} after epoch {start_epoch} (best val acc {best_acc:.3f})")
    elif args.resume:
        log(f"no checkpoint at {ckpt_path}; starting from scratch")

    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    labels = np.array([c.label for c in train])
    for epoch in range(start_epoch, args.epochs):
        model.train()
        rng = np.random.default_rng([args.seed, epoch])
        torch.manual_seed(args.seed * 1000 + epoch)
        order = rng.permutation(len(train))
        t_epoch, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            batch = np.empty((len(idx), crop), np.float32)
            for row, i in enumerate(idx):
                a = train[i].audio
                off = int(rng.integers(0, a.shape[0] - crop + 1))
                batch[row] = a[off:off + crop]
            y = torch.from_numpy(labels[idx])
            step = epoch * steps_per_epoch + b
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, args.lr, args.warmup_steps)
            logits = class_logits(name, model(model_input(name, cfg, torch.from_numpy(batch))))
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            if b % 10 == 0 or b == steps_per_epoch - 1:
                print(f"\repoch {epoch + 1}/{args.epochs} step {b + 1}/{steps_per_epoch} "
                      f"loss {loss_sum / seen:.4f} train acc {correct / seen:.3f} "
                      f"{time.time() - t_epoch:.0f} s", end="", file=sys.stderr, flush=True)
        val_acc = accuracy(name, model, val)
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
                        "val_acc": val_acc, "seconds": time.time() - t_epoch})
        improved = val_acc > best_acc
        if improved:
            best_acc, best_state = val_acc, _plain_state(model)
            save_checkpoint(best_state, out)
        print(f"\repoch {epoch + 1}/{args.epochs} loss {loss_sum / seen:.4f} train acc {correct / seen:.3f} "
              f"val acc {val_acc:.3f}{' (best, saved)' if improved else ''} {time.time() - t_epoch:.0f} s",
              file=sys.stderr, flush=True)
        save_checkpoint({"model_name": name, "config": CONFIG, "epoch": epoch + 1, "model": _plain_state(model),
                      "optimizer": opt.state_dict(), "best_acc": best_acc, "best_state": best_state,
                      "history": history}, ckpt_path)
    if best_state is None:
        raise SystemExit("error: nothing trained (is --epochs at most the checkpoint's epoch?)")
    if not out.is_file():  # e.g. resumed a finished run with a different --out
        save_checkpoint(best_state, out)
    log(f"best val acc {best_acc:.3f}; weights {out} ({out.stat().st_size / 1e6:.2f} MB); "
        f"checkpoint {ckpt_path}; {time.time() - t0:.0f} s")
    log(installed_hint(out, name, CONFIG))


if __name__ == "__main__":
    main(sys.argv[1:])
