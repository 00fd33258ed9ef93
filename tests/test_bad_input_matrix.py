"""The bad-input matrix: every case is one stderr line naming the file and the problem,
a non-zero exit code, no traceback, nothing written. Supported-but-unusual inputs
(8/24-bit, stereo, 8 kHz WAVs, RGBA/16-bit images) must work."""

from __future__ import annotations

import json
import os
import shutil
import struct
import wave
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from mmedge.cli import run
from mmedge.export.artifact import finish
from mmedge.runtime.manifest import read_manifest


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("matrix")
    got = {}
    for name in ("captioner", "voice-encoder", "refocus", "soundnet"):
        assert run(["export", name, "--out", str(out)]) == 0
        got[name] = out / f"{name}-tiny-onnx-fp32"
    return got


def write_pcm(path: Path, x: np.ndarray, rate: int, width: int, channels: int = 1) -> Path:
    x = np.clip(x, -1, 1)
    if width == 1:
        data = ((x + 1) * 127.5).round().astype(np.uint8).tobytes()
    elif width == 2:
        data = (x * 32767).round().astype("<i2").tobytes()
    else:  # 24-bit little endian
        v = (x * 8388607).round().astype("<i4")
        data = b"".join(int(s).to_bytes(4, "little", signed=True)[:3] for s in v.ravel())
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return path


def write_float_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def png(path: Path, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(0)
    if mode == "I;16":
        Image.fromarray((rng.random(size[::-1]) * 65535).astype(np.uint16)).save(path)
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        arr = (rng.random((size[1], size[0], channels)) * 255).astype(np.uint8)
        Image.fromarray(arr.squeeze() if channels == 1 else arr, mode).save(path)
    return path


def copy_art(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rehash(art: Path) -> None:
    finish(art, read_manifest(art, verify=False))


# Each case: (id, setup(tmp, arts) -> argv, expected message, expected exit code or None for "fails")
Case = tuple[str, Callable[[Path, dict[str, Path]], list[str]], str]


def _caption(img: Callable[[Path], Path]) -> Callable[[Path, dict[str, Path]], list[str]]:
    return lambda t, a: ["caption", str(img(t)), "--artifact", str(a["captioner"])]


def _embed(wav: Callable[[Path], Path], model: str = "voice-encoder") -> Callable[[Path, dict[str, Path]], list[str]]:
    return lambda t, a: ["embed", str(wav(t)), "--artifact", str(a[model])]


def _png(t: Path) -> Path:
    Image.new("RGB", (40, 30), (200, 10, 10)).save(t / "ok.png")
    return t / "ok.png"


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(t: Path) -> Path:
        (t / name).write_bytes(data)
        return t / name
    return make


def _truncated_png(t: Path) -> Path:
    p = png(t / "full.png", size=(200, 200))
    data = p.read_bytes()
    (t / "half.png").write_bytes(data[: len(data) // 2])
    return t / "half.png"


def _art_with(change: Callable[[Path], None], model: str = "captioner", rehashed: bool = True
              ) -> Callable[[Path, dict[str, Path]], list[str]]:
    def setup(t: Path, a: dict[str, Path]) -> list[str]:
        art = copy_art(a[model], t / "art")
        change(art)
        if rehashed:
            rehash(art)
        return ["parity", "--artifact", str(art)]
    return setup


def _manifest_edit(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def change(art: Path) -> None:
        m = json.loads((art / "manifest.json").read_text())
        edit(m)
        (art / "manifest.json").write_text(json.dumps(m))
    return change


def _ckpt(kind: str) -> Callable[[Path, dict[str, Path]], list[str]]:
    def setup(t: Path, a: dict[str, Path]) -> list[str]:
        from mmedge.models import zoo
        from mmedge.runtime.vocab import Vocabulary

        vocab = Vocabulary.synthetic(23)
        wm = t / "WORDMAP.json"
        wm.write_text(json.dumps(dict(vocab.word_map)))
        ck = t / "BEST_checkpoint.pth.tar"
        model = zoo.get("captioner").create("tiny")
        if kind == "malicious":
            class Evil:
                def __reduce__(self):
                    return (os.system, (f"touch {t / 'pwned'}",))
            torch.save({"encoder": Evil(), "decoder": model.decoder.state_dict()}, ck)
        elif kind == "wrong-arch":
            dec = model.decoder.state_dict()
            dec["fc.weight"] = torch.zeros(5, 3)
            torch.save({"encoder": model.encoder.state_dict(), "decoder": dec}, ck)
        elif kind == "missing-keys":
            dec = model.decoder.state_dict()
            del dec["init_h.weight"]
            torch.save({"encoder": model.encoder.state_dict(), "decoder": dec}, ck)
        elif kind == "garbage":
            ck.write_bytes(b"this is not a checkpoint")
        elif kind == "no-start":
            torch.save({"encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict()}, ck)
            m = dict(vocab.word_map)
            del m["<start>"]
            wm.write_text(json.dumps(m))
        elif kind == "wordmap-not-json":
            torch.save({"encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict()}, ck)
            wm.write_text("{not json")
        return ["export", "captioner", "--checkpoint", str(ck), "--word-map", str(wm), "--out", str(t / "out")]
    return setup


def _calib(kind: str) -> Callable[[Path, dict[str, Path]], list[str]]:
    def setup(t: Path, a: dict[str, Path]) -> list[str]:
        d = t / "calib"
        d.mkdir()
        if kind == "mixed":
            png(d / "a.png")
            write_pcm(d / "b.wav", tone(1, 16000), 16000, 2)
        return ["export", "captioner", "--precision", "int8", "--calib-data", str(d), "--out", str(t / "out")]
    return setup


def _refocus(near: str, far: str, depth: Callable[[Path], Path] | None = None) -> Callable[[Path, dict[str, Path]], list[str]]:
    def setup(t: Path, a: dict[str, Path]) -> list[str]:
        img = png(t / "photo.png")
        dpath = depth(t) if depth else t / "d.npy"
        if depth is None:
            np.save(dpath, np.ones((30, 40), np.float32))
        return ["refocus", str(img), "--depth", str(dpath), "--artifact", str(a["refocus"]), "--near", near,
                "--far", far, "--out", str(t / "out.png")]
    return setup


def _npy(name: str, arr: np.ndarray) -> Callable[[Path], Path]:
    def make(t: Path) -> Path:
        np.save(t / name, arr)
        return t / name
    return make


BAD: list[Case] = [
    # images
    ("image-garbage", _caption(_bytes("x.png", b"garbage bytes")), "x.png: not an image PIL can read"),
    ("image-truncated", _caption(_truncated_png), "half.png: unreadable or truncated image"),
    ("image-zero-bytes", _caption(_bytes("empty.jpg", b"")), "empty.jpg: not an image PIL can read"),
    ("image-is-a-wav", _caption(lambda t: write_pcm(t / "sound.png", tone(0.1, 8000), 8000, 2)),
     "sound.png: not an image PIL can read"),
    ("image-missing", _caption(lambda t: t / "nope.png"), "nope.png: image not found"),
    ("image-folder-without-images", _caption(lambda t: t), "directory has no images"),
    ("image-list-empty", _caption(_bytes("photos.txt", b"# none yet\n")), "photos.txt: the image list is empty"),
    # batch captioning and scale-out (--out, --ray)
    ("out-folder-missing", lambda t, a: _caption(_png)(t, a) + ["--out", str(t / "no" / "r.jsonl")],
     "folder"),
    ("out-is-not-ours", lambda t, a: _caption(_png)(t, a) + ["--out", str(_bytes("mine.jsonl", b"{}\n")(t))],
     "mine.jsonl: exists but has no mine.jsonl.job.json"),
    ("workers-without-ray", lambda t, a: _caption(_png)(t, a) + ["--out", str(t / "r.jsonl"), "--workers", "2"],
     "--workers and --ship-artifact need --ray"),
    ("eval-out-two-beams", lambda t, a: ["eval", "captioner", "-a", str(a["captioner"]), "--beam", "1,3",
                                         "--out", str(t / "e.jsonl")], "one --beam"),
    ("ray-cluster-unreachable", lambda t, a: _caption(_png)(t, a) + ["--out", str(t / "r.jsonl"), "--ray",
                                                                     "127.0.0.1:1"], "nothing answers at 127.0.0.1:1"),
    ("backend-option-unknown", lambda t, a: _caption(_png)(t, a) + ["-O", "device=GPU"],
     "unknown onnxruntime session option(s) device; valid: threads, providers"),
    ("backend-option-no-value", lambda t, a: _caption(_png)(t, a) + ["-O", "device"], "expected KEY=VALUE"),
    ("eval-ray-pytorch", lambda t, a: ["eval", "captioner", "--ray"], "pass --artifact"),
    # audio
    ("wav-zero-samples", _embed(lambda t: write_pcm(t / "empty.wav", np.zeros(0, np.float32), 16000, 2)),
     "empty.wav"),
    ("wav-nan", _embed(lambda t: write_float_wav(t / "nan.wav", np.full(16000, np.nan, np.float32), 16000)),
     "nan.wav: contains NaN or Inf"),
    ("wav-inf", _embed(lambda t: write_float_wav(t / "inf.wav", np.r_[tone(1, 16000), np.inf].astype(np.float32),
                                                 16000)), "inf.wav: contains NaN or Inf"),
    ("wav-silent", _embed(lambda t: write_pcm(t / "silent.wav", np.zeros(16000, np.float32), 16000, 2)),
     "silent.wav: audio is silent"),
    ("wav-not-riff", _embed(_bytes("x.wav", b"ID3 this is an mp3")), "x.wav"),
    ("wav-truncated", _embed(lambda t: _bytes("cut.wav", write_pcm(t / "f.wav", tone(1, 16000), 16000, 2)
                                              .read_bytes()[:2000])(t)), "cut.wav"),
    ("wav-10-minutes", _embed(lambda t: write_pcm(t / "long.wav", tone(600, 8000), 8000, 2)),
     "long.wav: 600 s is longer than the 300 s"),
    ("wav-too-short", _embed(lambda t: write_pcm(t / "short.wav", tone(0.02, 16000), 16000, 2)),
     "short.wav: too short for this model"),
    ("wav-missing", _embed(lambda t: t / "gone.wav"), "gone.wav"),
    # models and artifacts
    ("onnx-truncated", _art_with(lambda a: (a / "encoder.onnx").write_bytes((a / "encoder.onnx").read_bytes()[:999])),
     "encoder.onnx: ONNX Runtime cannot load it"),
    ("onnx-of-another-model", None, "belongs to another model"),  # filled below (needs two artifacts)
    ("onnx-tampered", _art_with(lambda a: (a / "decoder_step.onnx").write_bytes(b"x"), rehashed=False),
     "decoder_step.onnx: sha256 does not match"),
    ("onnx-missing", _art_with(lambda a: (a / "decoder_init.onnx").unlink(), rehashed=False),
     "decoder_init.onnx: missing"),
    ("manifest-missing", _art_with(lambda a: (a / "manifest.json").unlink(), rehashed=False),
     "manifest.json: missing"),
    ("manifest-invalid-json", _art_with(lambda a: (a / "manifest.json").write_text("{oops"), rehashed=False),
     "manifest.json: invalid JSON"),
    ("manifest-unknown-field", _art_with(_manifest_edit(lambda m: m.update(surprise=1)), rehashed=False),
     "unknown fields surprise"),
    ("manifest-newer-version", _art_with(_manifest_edit(lambda m: m.update(format_version=99)), rehashed=False),
     "format_version 99 is newer"),
    ("manifest-malformed", _art_with(_manifest_edit(lambda m: m.pop("graphs")), rehashed=False),
     "malformed manifest"),
    ("artifact-not-a-dir", lambda t, a: ["parity", "--artifact", str(t / "nowhere")], "not an artifact directory"),
    ("artifact-wrong-kind", lambda t, a: ["caption", str(png(t / "p.png")), "--artifact", str(a["soundnet"])],
     "not a captioner"),
    # word maps and checkpoints
    ("wordmap-no-start", _ckpt("no-start"), "lacks <start>"),
    ("wordmap-not-json", _ckpt("wordmap-not-json"), "WORDMAP.json: not a JSON word map"),
    ("checkpoint-malicious", _ckpt("malicious"), "refusing to unpickle"),
    ("checkpoint-wrong-architecture", _ckpt("wrong-arch"), "BEST_checkpoint.pth.tar"),
    ("checkpoint-missing-keys", _ckpt("missing-keys"), "init_h.weight"),
    ("checkpoint-garbage", _ckpt("garbage"), "BEST_checkpoint.pth.tar"),
    # calibration folders
    ("calib-empty", _calib("empty"), "no images (PNG, JPEG, ...) found"),
    ("calib-mixed", _calib("mixed"), "mixes 1 images and 1 audio files"),
    # arguments
    ("beam-0", lambda t, a: ["caption", str(png(t / "p.png")), "--artifact", str(a["captioner"]), "--beam", "0"],
     "Invalid value for '--beam'"),
    ("max-len-0", lambda t, a: ["caption", str(png(t / "p.png")), "--artifact", str(a["captioner"]),
                                "--max-len", "0"], "Invalid value for '--max-len'"),
    ("near-greater-than-far", _refocus("3", "1"), "need 0 <= near <= far"),
    ("near-negative", _refocus("-1", "2"), "need 0 <= near <= far"),
    ("depth-negative", _refocus("0", "2", _npy("neg.npy", -np.ones((30, 40), np.float32))),
     "neg.npy: depth must be finite and non-negative"),
    ("depth-wrong-size", _refocus("0", "2", _npy("small.npy", np.ones((5, 5), np.float32))),
     "depth map is 5x5 but the image is 40x30"),
    ("unknown-backend", lambda t, a: ["parity", "--artifact", str(a["soundnet"]), "--backend", "tflite"],
     "unknown backend 'tflite'"),
    ("unknown-model", lambda t, a: ["export", "yolo"], "unknown model 'yolo'"),
    ("unknown-config", lambda t, a: ["export", "captioner", "--config", "xl"], "unknown config of captioner 'xl'"),
    ("missing-argument", lambda t, a: ["caption"], "Missing argument"),
    ("unknown-command", lambda t, a: ["frobnicate"], "No such command 'frobnicate'"),
]


def _other_model(t: Path, a: dict[str, Path]) -> list[str]:
    art = copy_art(a["captioner"], t / "art")
    shutil.copyfile(a["soundnet"] / "model.onnx", art / "encoder.onnx")
    rehash(art)
    return ["parity", "--artifact", str(art)]


BAD = [(i, _other_model if s is None else s, m) for i, s, m in BAD]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(case: Case, arts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, setup, message = case
    argv = setup(tmp_path, arts)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = run(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0, f"exit 0 for {argv}"
    assert len(lines) == 1 and lines[0].startswith("mmedge: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, "something was written"
    assert not (tmp_path / "pwned").exists()


def test_matrix_is_large_enough() -> None:
    assert len(BAD) >= 40


GOOD = [
    ("wav-8-bit", lambda t: write_pcm(t / "a.wav", tone(1, 16000), 16000, 1)),
    ("wav-24-bit", lambda t: write_pcm(t / "a.wav", tone(1, 16000), 16000, 3)),
    ("wav-stereo", lambda t: write_pcm(t / "a.wav", np.repeat(tone(1, 16000), 2), 16000, 2, channels=2)),
    ("wav-8-khz", lambda t: write_pcm(t / "a.wav", tone(1, 8000), 8000, 2)),
    ("wav-float", lambda t: write_float_wav(t / "a.wav", tone(1, 16000), 16000)),
]


@pytest.mark.parametrize("make", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_unusual_but_valid_audio_works(make: Callable[[Path], Path], arts: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["embed", str(make(tmp_path)), "--artifact", str(arts["voice-encoder"]), "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert len(r["embedding"]) == 32


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16"])
def test_unusual_but_valid_images_work(mode: str, arts: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["caption", str(png(tmp_path / "p.png", mode)), "--artifact", str(arts["captioner"]), "--json",
                "--max-len", "4"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1
