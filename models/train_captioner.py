"""Train the demo captioner on the synthetic shapes scenes.

    python -m mmedge.models.train captioner [--epochs N] [--batch-size B] [--lr LR] [--threads T]
                                            [--out PATH] [--resume CKPT] [--seed S] [--replace-shipped] ...

The recipe of sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning's `train.py`:
teacher forcing through `DecoderWithAttention.forward`, cross-entropy on the
packed targets, the doubly stochastic attention regularisation
`alpha_c * ((1 - alphas.sum(dim=1)) ** 2).mean()` (off by default here), Adam,
gradient clipping by value, BLEU-4 (beam 3, the PyTorch reference decoding) on the
validation split after every epoch, keeping the best. Differences, because the model
starts from scratch and is small:

* the encoder is trained from the first epoch with the decoder's learning rate
  (warm-up then cosine decay);
* each image is encoded once per batch and its features shared by
  `--captions-per-image` of its five references (sampled afresh every epoch);
* the encoder's grid is also supervised cell by cell with what object covers each
  cell (`models/object_grid.py`, weight `--grid-loss`): through the caption loss
  alone a small encoder learns colours but barely shapes;
* the attention regulariser is off (`--alpha-c 0`): it asks every cell to be attended
  for a whole step in total, but most cells of a shapes scene are background.

Every epoch a resumable checkpoint (model, optimizer, epoch, best weights) is
written atomically to `--checkpoint`; `--resume` continues from one. At the end
only the best model's `state_dict()` (plain float32 tensors, loadable with
`torch.load(weights_only=True)`) is written atomically to `--out`, by default
`./mmedge-train/captioner-demo.pt`; the shipped `models/weights/captioner-demo.pt`
is written only with `--replace-shipped` (models/train.py).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from mmedge.atomic import atomic_path
from mmedge.data import shapes
from mmedge.data.caption_objects import score_captions
from mmedge.models import zoo
from mmedge.models.caption_metrics import caption_scores
from mmedge.models.captioner import CONFIGS, CaptionModel
from mmedge.models.checkpoint import save_checkpoint
from mmedge.models.hard_scenes import wrong_scenes
from mmedge.models.object_grid import GridHead, attention_loss, attention_targets, grid_loss, grid_targets
from mmedge.models.torch_captioner import TorchCaptioner
from mmedge.models.train import add_output_args, installed_hint, output_paths



def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mmedge.models.train captioner", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    trainable = sorted(n for n, c in CONFIGS.items() if c.words == shapes.vocabulary_words())
    p.add_argument("--config", default="demo", choices=trainable, help="captioner config (with the shapes vocabulary)")
    p.add_argument("--epochs", type=int, default=11, help="passes over the training scenes")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--captions-per-image", type=int, default=2, choices=range(1, 6), metavar="{1..5}",
                   help="references per image and step (sampled from the 5 every epoch)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (encoder and decoder)")
    p.add_argument("--warmup-steps", type=int, default=200, help="linear warm-up before the cosine decay")
    p.add_argument("--alpha-c", type=float, default=0.0, help="doubly stochastic attention regularisation "
                   "(the tutorial's 1.0 spreads the attention over the background)")
    p.add_argument("--grid-loss", type=float, default=1.0,
                   help="weight of the per-cell object supervision of the encoder grid (0: caption loss only)")
    p.add_argument("--balance-objects", action="store_true",
                   help="weigh every object alike in the grid loss (a small object covers one cell, a large a dozen)")
    p.add_argument("--canonical", action="store_true",
                   help="always train on the first (template) reference beside the random ones, so the model prefers "
                        "one of the nearly tied paraphrases and reduced-precision builds pick the same sentence")
    p.add_argument("--attention-loss", type=float, default=0.0,
                   help="weight of the attention supervision (needs --canonical): while the template reference "
                        "names an object, the decoder's attention is taught to rest on that object's cells")
    p.add_argument("--attention-words", choices=("phrase", "names"), default="phrase",
                   help="which words --attention-loss supervises: the whole noun phrase, or its colour and shape")
    p.add_argument("--keep", choices=("best", "last"), default="best",
                   help="weights written to --out: the epoch with the best validation BLEU-4, or the last epoch "
                        "(a fine-tune's cosine schedule ends at its lowest learning rate)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (a checkpoint's best model, or plain weights) with a fresh schedule")
    p.add_argument("--grad-clip", type=float, default=5.0, help="clip gradients at this absolute value")
    p.add_argument("--focus", type=Path, default=None, metavar="ITEMS.jsonl",
                   help="draw the training scenes this model captioned wrongly more often: the output of "
                        "`mmedge eval captioner --split train --out ITEMS.jsonl` (objects named wrongly)")
    p.add_argument("--focus-fraction", type=float, default=0.15,
                   help="with --focus, the share of every epoch's draws taken from those scenes")
    p.add_argument("--train-size", type=int, default=None, help="use the first N training scenes")
    p.add_argument("--val-size", type=int, default=None, help="use the first N validation scenes")
    p.add_argument("--val-beam", type=int, default=3, help="beam size of the per-epoch validation BLEU")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p)  # --out, --checkpoint, --replace-shipped (models/train.py)
    p.add_argument("--resume", type=Path, default=None, help="continue from this checkpoint")
    p.add_argument("--cache", type=Path, default=None,
                   help="directory to keep the rendered training images in (rendered once, reused)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the epoch during which this much training time has passed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    args = p.parse_args(argv)
    if args.attention_loss and not args.canonical:
        p.error("--attention-loss needs --canonical (it supervises the template reference)")
    if not 0.0 <= args.focus_fraction <= 1.0:
        p.error("--focus-fraction must be between 0 and 1")
    if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0 or args.threads < 1:
        p.error("--epochs, --batch-size, --threads must be >= 1 and --lr > 0")
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data
def resize(image: np.ndarray, size: int) -> np.ndarray:
    """The resize of `mmedge.runtime.image.preprocess_image` (PIL bilinear), kept as uint8."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


@dataclass
class Rendered:
    images: np.ndarray  # [N, size, size, 3] uint8, resized as the runtime does
    captions: list[list[str]]  # 5 per scene


def _render_chunk(job: tuple[list[int], int]) -> tuple[np.ndarray, list[list[str]]]:
    seeds, size = job
    images = np.empty((len(seeds), size, size, 3), np.uint8)
    captions = []
    for i, s in enumerate(seeds):
        scene = shapes.make_scene(s)
        images[i] = resize(scene.image, size)
        captions.append(scene.captions)
    return images, captions


def render_split(split: str, limit: int | None, size: int, cache: Path | None, workers: int = 1,
                 progress: bool = False) -> Rendered:
    """The scenes of a split, rendered once (in `workers` processes; kept in `cache` if given)."""
    seeds = shapes.split(split)[:limit]
    path = None
    if cache is not None:  # keyed by the generator's output too, so a changed generator never reuses stale images
        first = shapes.make_scene(seeds[0])
        tag = hashlib.sha256(first.image.tobytes() + "|".join(first.captions).encode()).hexdigest()[:12]
        path = cache / f"shapes-{split}-{len(seeds)}-{size}-{tag}.npz"
    if path is not None:  # this many scenes, or the whole split (a prefix of it serves a smaller run)
        whole = path.with_name(path.name.replace(f"-{len(seeds)}-", f"-{len(shapes.split(split))}-"))
        for found in (path, whole):
            if found.is_file():
                with np.load(found, allow_pickle=False) as z:
                    if {"images", "captions"} <= set(z.files) and len(z["captions"]) >= len(seeds):
                        return Rendered(z["images"][:len(seeds)], [list(c) for c in z["captions"][:len(seeds)]])
    t0 = time.time()
    chunk = 250
    jobs = [(seeds[i:i + chunk], size) for i in range(0, len(seeds), chunk)]
    images = np.empty((len(seeds), size, size, 3), np.uint8)
    captions: list[list[str]] = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            parts = pool.imap(_render_chunk, jobs)  # in order: the split's seed order is kept
            for k, (imgs, caps) in enumerate(parts):
                images[k * chunk:k * chunk + len(imgs)] = imgs
                captions.extend(caps)
                if progress:
                    log(f"  rendered {len(captions)}/{len(seeds)} {split} scenes")
    else:
        for k, job in enumerate(jobs):
            imgs, caps = _render_chunk(job)
            images[k * chunk:k * chunk + len(imgs)] = imgs
            captions.extend(caps)
    log(f"rendered {len(seeds)} {split} scenes in {time.time() - t0:.1f} s")
    if path is not None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, images=images, captions=np.array(captions))
    return Rendered(images, captions)


def encode_captions(captions: list[list[str]], model: CaptionModel) -> tuple[Tensor, Tensor]:
    """-> ids [N, 5, L+2] (<start> words <end> <pad>...) and lengths [N, 5] (words + 2), the tutorial's layout."""
    vocab = model.vocab
    pad = vocab.word_map["<pad>"]
    encoded = [[[vocab.start, *vocab.encode(c), vocab.end] for c in caps] for caps in captions]
    longest = max(len(c) for caps in encoded for c in caps)
    ids = torch.full((len(encoded), len(encoded[0]), longest), pad, dtype=torch.long)
    lengths = torch.zeros(len(encoded), len(encoded[0]), dtype=torch.long)
    for i, caps in enumerate(encoded):
        for j, c in enumerate(caps):
            ids[i, j, : len(c)] = torch.tensor(c)
            lengths[i, j] = len(c)
    return ids, lengths


class Normalise:
    """uint8 NHWC -> float32 NCHW with the runtime's preprocessing (scale, mean, std)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.scale = float(params.get("scale", 1.0 / 255.0))
        self.mean = torch.tensor(params["mean"], dtype=torch.float32)
        self.std = torch.tensor(params["std"], dtype=torch.float32)

    def __call__(self, images: np.ndarray) -> Tensor:
        x = torch.from_numpy(images if images.flags.writeable else images.copy()).float() * self.scale
        # channels-last: oneDNN's convolutions train about 25% faster on it than on NCHW
        return ((x - self.mean) / self.std).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------ checkpoints
def plain_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def init_weights(model: CaptionModel, head: GridHead, path: Path) -> None:
    """Load a fine-tune's starting weights: a training checkpoint's best model (and its grid head), or plain weights."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # (a missing, truncated or pickled-code file)
        raise SystemExit(f"error: {path}: not a readable captioner checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise SystemExit(f"error: {path}: expected a captioner checkpoint or state dict")
    weights = state.get("best_model") or state.get("model") or state
    try:
        model.load_state_dict(weights)
        if isinstance(state.get("grid_head"), dict):
            head.load_state_dict(state["grid_head"])
    except RuntimeError as exc:
        raise SystemExit(f"error: {path}: not weights of this captioner config ({str(exc).splitlines()[0]})") from None
    log(f"starting from the weights in {path}")


# ------------------------------------------------------------------ training
def attention_masks(captions: list[str], objects: list[list[Any]], length: int, cells: int,
                    names_only: bool = False) -> np.ndarray:
    """[N, length, cells * cells] bool: for each template caption's token position (<start> words
    <end> <pad>..., as `encode_captions`), the cells of the object its word names."""
    out = np.zeros((len(captions), length, cells * cells), bool)
    for n, (caption, objs) in enumerate(zip(captions, objects)):
        for i, mask in enumerate(attention_targets(caption, objs, cells, names_only)):
            if mask is not None:
                out[n, i + 1] = mask
    return out


def epoch_order(rng: np.random.Generator, n: int, focus: np.ndarray | None, fraction: float) -> np.ndarray:
    """The scenes of one epoch, shuffled: every scene once, or with `focus` (indices of scenes the
    model got wrong) that share of the n draws taken from the focus scenes (with replacement)
    and the rest from all scenes without; the epoch keeps its length."""
    if focus is None or not len(focus) or fraction <= 0:
        return rng.permutation(n)
    k = min(n, int(round(fraction * n)))
    order = np.concatenate([rng.permutation(n)[:n - k], rng.choice(focus, size=k, replace=True)])
    return order[rng.permutation(n)]


def train_epoch(model: CaptionModel, head: GridHead, opt: torch.optim.Optimizer, images: np.ndarray, ids: Tensor,
                lengths: Tensor, grids: Tensor, normalise: Normalise, args: argparse.Namespace, epoch: int, step: int,
                total_steps: int, progress: bool, att: np.ndarray | None = None,
                focus: np.ndarray | None = None) -> tuple[float, int]:
    model.train()
    head.train()
    rng = np.random.default_rng([args.seed, epoch])
    order = epoch_order(rng, len(images), focus, args.focus_fraction)
    k = args.captions_per_image
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    losses: list[float] = []

    bar = None
    plain_every = 0  # not a terminal (a log file, nohup): a plain line every 5% of the epoch instead
    if progress and not sys.stderr.isatty():
        plain_every, progress = max(1, len(batches) // 20), False
    t0 = time.time()
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        bar = Progress(TextColumn(f"epoch {epoch + 1}/{args.epochs}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("train", total=len(batches), loss=float("nan"))
    try:
        for idx in batches:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total_steps, args.lr, args.warmup_steps)
            x = normalise(images[idx])
            pick = np.argsort(rng.random((len(idx), ids.shape[1])), axis=1)[:, :k]  # k of the 5 references
            if args.canonical:  # the template reference always, and k - 1 others at random
                others = np.argsort(rng.random((len(idx), ids.shape[1] - 1)), axis=1)[:, :k - 1] + 1
                pick = np.concatenate([np.zeros((len(idx), 1), np.int64), others], axis=1)
            caps = ids[idx[:, None], pick].reshape(len(idx) * k, -1)
            caplens = lengths[idx[:, None], pick].reshape(-1, 1)
            grid = model.encoder(x)
            feats = grid.repeat_interleave(k, dim=0)  # one encoding shared by the k references
            scores, caps_sorted, decode_lengths, alphas, sort_ind = model.decoder(feats, caps, caplens)
            targets = caps_sorted[:, 1:]
            scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
            targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
            loss = F.cross_entropy(scores, targets)
            if args.alpha_c:
                loss = loss + args.alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
            if att is not None:  # row i * k of the batch is image i's template reference (--canonical)
                masks = torch.zeros(len(idx) * k, att.shape[1], att.shape[2], dtype=torch.bool)
                masks[0::k] = torch.from_numpy(att[idx])
                steps = alphas.shape[1]  # step t attends to predict word t + 1
                loss = loss + args.attention_loss * attention_loss(alphas, masks[sort_ind][:, 1:1 + steps])
            if args.grid_loss:
                loss = loss + args.grid_loss * grid_loss(head, grid, grids[idx], balance=args.balance_objects)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip:
                for p in model.parameters():
                    if p.grad is not None:  # (the grid head's parameters are tiny and need no clipping)
                        p.grad.data.clamp_(-args.grad_clip, args.grad_clip)
            opt.step()
            step += 1
            losses.append(loss.item())
            if bar is not None:
                bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
            elif plain_every and len(losses) % plain_every == 0:
                done, elapsed = len(losses), time.time() - t0
                log(f"  epoch {epoch + 1}/{args.epochs}: step {done}/{len(batches)}  loss "
                    f"{np.mean(losses[-50:]):.3f}  {elapsed:.0f} s, ~{elapsed * (len(batches) - done) / done:.0f} s left")
    finally:
        if bar is not None:
            bar.stop()
    return float(np.mean(losses)), step


def validate(model: CaptionModel, val_scenes: list[shapes.Scene], beam: int) -> tuple[dict[str, float], list[str]]:
    """BLEU-1..4 and exact match, plus object accuracy and hallucination rate (data/caption_objects.py)."""
    predictor = TorchCaptioner(model)  # sets eval mode; preprocesses exactly as the runtime
    metrics, hyps = caption_scores(predictor, [s.image for s in val_scenes], [s.captions for s in val_scenes], beam=beam)
    objects = score_captions(hyps, [s.objects for s in val_scenes]).metrics()
    return {**metrics, **objects}, hyps


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "captioner":
        argv = argv[1:]
    args = parse_args(argv)
    args.out, args.checkpoint = output_paths(args, "captioner", args.config)  # shipped: --replace-shipped only
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = CONFIGS[args.config]
    model = CaptionModel(cfg)
    model.encoder.to(memory_format=torch.channels_last)  # (plain_state() stores contiguous NCHW tensors)
    params = zoo.get("captioner").preprocessing(cfg)
    normalise = Normalise(params)
    progress = not args.no_progress

    data = render_split("train", args.train_size, cfg.image_size, args.cache, args.threads, progress)
    images = data.images
    ids, lengths = encode_captions(data.captions, model)
    layouts = [shapes.scene_layout(s)[0] for s in shapes.split("train")[:len(images)]] \
        if args.grid_loss or args.attention_loss else []
    grids = torch.from_numpy(grid_targets(layouts, cfg.encoded_size)) if args.grid_loss else torch.empty(0)
    att = attention_masks([c[0] for c in data.captions], layouts, ids.shape[2], cfg.encoded_size,
                          args.attention_words == "names") \
        if args.attention_loss else None
    focus = None
    if args.focus is not None:
        focus = np.array(wrong_scenes(args.focus, shapes.split("train")[:len(images)]), np.int64)
        log(f"--focus: {len(focus)} of {len(images)} training scenes captioned wrongly in {args.focus}; "
            f"{args.focus_fraction:.0%} of every epoch drawn from them")
    val_scenes = [shapes.make_scene(s) for s in shapes.split("val")[:args.val_size]]
    val_refs = [s.captions for s in val_scenes]

    head = GridHead(cfg.encoder_dim)  # training only: not part of the model's state_dict
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=args.lr)
    steps_per_epoch = math.ceil(len(images) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    start_epoch, step, best, best_state, history = 0, 0, -1.0, None, []
    if args.init is not None and args.resume is None:
        init_weights(model, head, args.init)
    if args.resume is not None:
        ckpt = torch.load(args.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        if "grid_head" in ckpt:
            head.load_state_dict(ckpt["grid_head"])
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch, step, best = int(ckpt["epoch"]) + 1, int(ckpt["step"]), float(ckpt["best_bleu4"])
        best_state, history = ckpt["best_model"], list(ckpt["history"])
        torch.set_rng_state(ckpt["torch_rng"])
        log(f"resumed from {args.resume} after epoch {start_epoch} (best BLEU-4 {best:.4f})")

    n_params = sum(p.numel() for p in model.parameters())
    log(f"training captioner --config {args.config}: {n_params:,} parameters, {len(images)} scenes, "
        f"{steps_per_epoch} steps/epoch, {args.threads} thread(s)")
    t_start = time.time()
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        loss, step = train_epoch(model, head, opt, images, ids, lengths, grids, normalise, args, epoch, step,
                                 total_steps, progress, att, focus)
        t_train = time.time() - t0
        metrics, hyps = validate(model, val_scenes, args.val_beam)
        improved = metrics["bleu4"] > best
        if improved:
            best, best_state = metrics["bleu4"], plain_state(model)
        history.append({"epoch": epoch + 1, "loss": loss, **metrics, "train_s": t_train})
        log(f"epoch {epoch + 1}/{args.epochs}: loss {loss:.4f}  val BLEU-1..4 "
            + " ".join(f"{metrics[f'bleu{n}']:.4f}" for n in range(1, 5))
            + f"  exact {metrics['exact_match']:.3f}  objects {metrics['object_accuracy']:.3f}"
            + f"  hallucinated {metrics['hallucination_rate']:.3f}"
            + f"  ({t_train:.0f} s train, {time.time() - t0 - t_train:.0f} s val)"
            + ("  *best*" if improved else ""))
        log(f"  e.g. {hyps[0]!r}  (ref {val_refs[0][0]!r})")
        save_checkpoint({"model": plain_state(model), "grid_head": plain_state(head), "optimizer": opt.state_dict(),
                         "epoch": epoch, "step": step, "best_bleu4": best, "best_model": best_state,
                         "history": history, "torch_rng": torch.get_rng_state(), "config": args.config},
                        args.checkpoint)
        if args.max_minutes is not None and (time.time() - t_start) / 60.0 >= args.max_minutes:
            log(f"stopping after epoch {epoch + 1}: --max-minutes {args.max_minutes} reached")
            break
    assert best_state is not None
    save_checkpoint(plain_state(model) if args.keep == "last" else best_state, args.out)
    size = args.out.stat().st_size
    kept = "the last epoch" if args.keep == "last" else f"best val BLEU-4 {best:.4f}"
    log(f"wrote {args.out} ({size / 1e6:.2f} MB, {kept}) in {time.time() - t_start:.0f} s")
    log(installed_hint(args.out, "captioner", args.config))


if __name__ == "__main__":
    main()
