"""The bad-input matrix: every case is exactly one stderr line `mmedge: error: ...` naming the
file and the problem, the exact exit code (2: usage or bad input, unless a case names 1: a
check that ran and found a mismatch), no traceback, nothing written. Supported-but-unusual
inputs (8/24-bit, stereo, 8 kHz WAVs, RGBA/16-bit images) must work."""

from __future__ import annotations

import json
import os
import re
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
from mmedge.errors import EXIT_CHECK_FAILED, EXIT_USAGE
from mmedge.export.artifact import finish
from mmedge.runtime.manifest import read_manifest


@pytest.fixture(scope="module")
def arts(cli_onnx: dict[str, Path]) -> dict[str, Path]:
    """The tiny ONNX artifacts of every model (tests/conftest.py); cases copy before changing one."""
    return cli_onnx


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


# Each case: (id, setup(tmp, arts) -> argv, a distinctive part of the message[, exit code]); the
# exit code is EXIT_USAGE (2) unless the case gives another one.
Setup = Callable[[Path, dict[str, Path]], list[str]]
Case = tuple[str, Setup, str, int]


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


def _dir(t: Path, name: str) -> Path:
    (t / name).mkdir()
    return t / name


def _jetson_bundle(t: Path, a: dict[str, Path], replace: dict[str, bytes]) -> Path:
    """A Jetson bundle of the soundnet artifact with members replaced (or added), sha256s left as they were."""
    import io
    import tarfile

    from mmedge.calibration.packaging import package
    from mmedge.export.package import PackageRequest

    good = package("jetson", PackageRequest([a["soundnet"]], t / "good.tar.gz", {}))
    bad = t / "bad.tar.gz"
    with tarfile.open(good) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            rel = m.name.split("/", 1)[1] if "/" in m.name else ""
            if rel in replace:
                data = replace.pop(rel)
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
        for rel, data in replace.items():
            info = tarfile.TarInfo(f"{m.name.split('/', 1)[0]}/{rel}")
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    good.unlink()
    return bad


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
     "no/r.jsonl: folder "),
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
     "empty.wav: no audio samples"),
    ("wav-nan", _embed(lambda t: write_float_wav(t / "nan.wav", np.full(16000, np.nan, np.float32), 16000)),
     "nan.wav: contains NaN or Inf"),
    ("wav-inf", _embed(lambda t: write_float_wav(t / "inf.wav", np.r_[tone(1, 16000), np.inf].astype(np.float32),
                                                 16000)), "inf.wav: contains NaN or Inf"),
    ("wav-silent", _embed(lambda t: write_pcm(t / "silent.wav", np.zeros(16000, np.float32), 16000, 2)),
     "silent.wav: audio is silent"),
    ("wav-not-riff", _embed(_bytes("x.wav", b"ID3 this is an mp3")), "x.wav: not a RIFF/WAVE file"),
    ("wav-truncated", _embed(lambda t: _bytes("cut.wav", write_pcm(t / "f.wav", tone(1, 16000), 16000, 2)
                                              .read_bytes()[:2000])(t)), "cut.wav: truncated data chunk"),
    ("wav-10-minutes", _embed(lambda t: write_pcm(t / "long.wav", tone(600, 8000), 8000, 2)),
     "long.wav: 600 s is longer than the 300 s"),
    ("wav-too-short", _embed(lambda t: write_pcm(t / "short.wav", tone(0.02, 16000), 16000, 2)),
     "short.wav: too short for this model"),
    ("wav-missing", _embed(lambda t: t / "gone.wav"), "gone.wav: no such file"),
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
    ("artifact-not-a-dir", lambda t, a: ["parity", "--artifact", str(t / "nowhere")], "nowhere: no such folder (expected an artifact directory"),
    ("artifact-wrong-kind", lambda t, a: ["caption", str(png(t / "p.png")), "--artifact", str(a["soundnet"])],
     "not a captioner"),
    # word maps and checkpoints
    ("wordmap-no-start", _ckpt("no-start"), "lacks <start>"),
    ("wordmap-not-json", _ckpt("wordmap-not-json"), "WORDMAP.json: not a JSON word map"),
    ("checkpoint-malicious", _ckpt("malicious"), "refusing to unpickle"),
    ("checkpoint-wrong-architecture", _ckpt("wrong-arch"),
     "BEST_checkpoint.pth.tar: wrong architecture for the decoder: shape mismatch fc.weight"),
    ("checkpoint-missing-keys", _ckpt("missing-keys"), "BEST_checkpoint.pth.tar: wrong architecture: decoder "
     "'init_h.weight' is missing"),
    ("checkpoint-garbage", _ckpt("garbage"), "BEST_checkpoint.pth.tar: not a PyTorch checkpoint"),
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
    ("tolerance-negative", lambda t, a: ["parity", "--artifact", str(a["soundnet"]), "--tolerance", "-1"],
     "--tolerance must be a finite number > 0, got -1.0"),
    ("tolerance-nan", lambda t, a: ["parity", "--artifact", str(a["soundnet"]), "--tolerance", "nan"],
     "--tolerance must be a finite number > 0, got nan"),
    ("threads-0", lambda t, a: _caption(_png)(t, a) + ["--threads", "0"], "Invalid value for '--threads'"),
    ("backend-option-threads-not-a-number", lambda t, a: _caption(_png)(t, a) + ["-O", "threads=many"],
     "onnxruntime session option threads='many': expected an integer from 1 to 1024"),
    ("attention-png-is-a-folder", lambda t, a: _caption(_png)(t, a) + ["--attention-png", str(_dir(t, "maps"))],
     "maps: is a directory; give the path of the file to write"),
    ("attention-png-under-a-file", lambda t, a: _caption(_png)(t, a) + [
        "--attention-png", str(_bytes("notes.txt", b"x")(t) / "a.png")], "notes.txt: is a file, not a folder"),
    ("refocus-out-is-a-folder", lambda t, a: _refocus("0", "2")(t, a)[:-1] + [str(_dir(t, "o"))],
     "o: is a directory; give the path of the file to write"),
    ("eval-unknown-split", lambda t, a: ["eval", "captioner", "-a", str(a["captioner"]), "--split", "dev",
                                         "--beam", "1"], "unknown split 'dev'; expected one of train, val, test"),
    ("export-out-is-a-file", lambda t, a: ["export", "soundnet", "--out", str(_bytes("f", b"x")(t))],
     "f: is a file; --out is the folder the artifact directories go in"),
    ("export-unknown-target", lambda t, a: ["export", "soundnet", "--target", "tflite", "--out", str(t / "o")],
     "unknown target 'tflite'; valid: tensorrt"),
    ("demo-out-is-a-file", lambda t, a: ["demo", "--out", str(_bytes("f", b"x")(t))],
     "f: is a file; --out is the folder the demo writes in"),
    ("profile-plot-not-png", lambda t, a: ["profile", "-a", str(a["soundnet"]), "--plot", str(_dir(t, "plots"))],
     "plots: --plot writes a PNG file"),
    ("profile-compare-not-json", lambda t, a: ["profile", "--compare", str(_bytes("a.json", b"{x")(t)),
                                               str(_bytes("b.json", b"{}")(t))], "a.json: invalid JSON"),
    ("profile-compare-missing", lambda t, a: ["profile", "--compare", str(t / "a.json"), str(t / "b.json")],
     "a.json: not found"),
    ("package-unknown-target", lambda t, a: ["package", "watch", "--verify", str(t / "x.zip")],
     "unknown package target 'watch'; valid: jetson, mobile"),
    ("package-verify-missing", lambda t, a: ["package", "mobile", "--verify", str(t / "app.zip")],
     "app.zip: bundle not found"),
    ("package-verify-not-a-zip", lambda t, a: ["package", "mobile", "--verify", str(_bytes("app.zip", b"PK?")(t))],
     "app.zip: not a zip file"),
    ("package-verify-not-a-tar", lambda t, a: ["package", "jetson", "--verify", str(_bytes("b.tar.gz", b"x")(t))],
     "b.tar.gz: not a readable .tar.gz"),
    ("package-verify-bundle-json-garbage", lambda t, a: ["package", "jetson", "--verify",
                                                         str(_jetson_bundle(t, a, {"bundle.json": b"{oops"}))],
     "bundle.json is not valid JSON"),
    # checks that ran and found a mismatch: exit 1
    ("parity-out-of-tolerance", lambda t, a: ["parity", "--artifact", str(a["soundnet"]), "--tolerance", "1e-12"],
     "output(s) out of tolerance: model.", EXIT_CHECK_FAILED),
    ("package-verify-tampered", lambda t, a: ["package", "jetson", "--verify", str(_jetson_bundle(
        t, a, {"artifacts/soundnet-tiny-onnx-fp32/model.onnx": b"x"}))],
     "1 file(s) changed or missing (first: ", EXIT_CHECK_FAILED),
    ("package-verify-added-file", lambda t, a: ["package", "jetson", "--verify",
                                                str(_jetson_bundle(t, a, {"extra.sh": b"rm -rf /"}))],
     "unlisted file(s) extra.sh", EXIT_CHECK_FAILED),
]


def _other_model(t: Path, a: dict[str, Path]) -> list[str]:
    art = copy_art(a["captioner"], t / "art")
    shutil.copyfile(a["soundnet"] / "model.onnx", art / "encoder.onnx")
    rehash(art)
    return ["parity", "--artifact", str(art)]


BAD = [(i, _other_model if s is None else s, m, *(code or [EXIT_USAGE])) for i, s, m, *code in BAD]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input(case: Case, arts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, setup, message, expected = case
    argv = setup(tmp_path, arts)
    capsys.readouterr()  # what the setup printed is not the command's
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = run(argv)
    out, err = capsys.readouterr()
    assert code == expected, f"exit {code}, expected {expected}, for {argv}: {err}"
    assert re.fullmatch(r"mmedge: error: [^\n]+\n", err), f"not exactly one error line: {err!r}"
    assert message in err, err
    assert "Traceback" not in err
    assert out == "" or expected == EXIT_CHECK_FAILED, out  # a check that ran may print its report
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, "something was written"
    assert not (tmp_path / "pwned").exists()


def test_matrix_is_large_enough() -> None:
    assert len(BAD) >= 70
    assert {c[3] for c in BAD} == {EXIT_USAGE, EXIT_CHECK_FAILED}


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
