"""Hostile inputs to the torch-free runtime (issue 16): resource bombs must cost no more memory
than the input's honest size, and every malformed input is one line `mmedge: error: ...` naming
the file, exit code 2, never a traceback.

Classes: WAV headers (absurd or odd sample rates, a data chunk larger than the file, clips too
long), image bombs (PNG/PPM/BMP headers declaring huge sizes, a 12000x12000 JPEG decoded at
reduced size), a folder with one bomb through `caption --out`, depth `.npy` files that are not
numbers, file names that are not UTF-8, NaN images, and wrong types through the Python API.
Memory is enforced in a child process (RLIMIT_AS, torch blocked: the runtime never needs it)
and its peak RSS is checked.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.cli import run
from mmedge.errors import EXIT_USAGE, InputError
from mmedge.runtime import audio as A
from mmedge.runtime import resample as R
from mmedge.runtime import wav as W
from mmedge.runtime.image import MAX_DECODE_PIXELS, MAX_PIXELS, preprocess_image, read_depth, read_image

LIMIT_MB = 1536  # address-space cap of the child processes
PEAK_RSS_MB = 400  # peak resident memory a bomb may cost the child (numpy + onnxruntime alone: ~120 MB)
PARAMS = {"image_size": 256, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

CHILD = textwrap.dedent("""
    import json, os, resource, sys
    limit = int(os.environ["BOMB_LIMIT"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.modules["torch"] = None  # the runtime must not need it
    code = 0
    try:
        if sys.argv[1] == "cli":
            from mmedge.cli import run
            code = run(sys.argv[2:])
        else:
            exec(sys.argv[2])
    finally:
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking (pytest) process
        hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
        with open(os.environ["BOMB_RSS"], "w") as f:
            f.write(hwm[0] if hwm else str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    sys.exit(code)
""")


def child(tmp: Path, mode: str, arg: list[str] | str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """Run the CLI (mode "cli") or a snippet ("py") in a memory-capped child: rc, stdout, stderr, peak RSS MB."""
    rss = tmp / f"rss-{os.getpid()}.txt"
    e = {**os.environ, "BOMB_LIMIT": str(LIMIT_MB << 20), "BOMB_RSS": str(rss), "MALLOC_ARENA_MAX": "2",
         "OMP_NUM_THREADS": "1", **(env or {})}
    argv = [sys.executable, "-c", CHILD, mode] + (arg if isinstance(arg, list) else [arg])
    p = subprocess.run(argv, capture_output=True, env=e, timeout=120, cwd=tmp)
    peak = int(rss.read_text()) / 1024 if rss.exists() else float("nan")
    out = p.stdout.decode("utf-8", "backslashreplace")
    return p.returncode, out, p.stderr.decode("utf-8", "backslashreplace"), peak


def one_error_line(stderr: str, *needles: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mmedge: error: ") and "Traceback" not in stderr, stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- builders


def wav(path: Path, rate: int, data: bytes = b"\x00\x01" * 64, channels: int = 1, bits: int = 16, tag: int = 1,
        declared: int | None = None) -> Path:
    """A RIFF/WAVE file with exactly this header (rate, data size as declared) and these bytes."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body)
    return path


def png_bomb(path: Path, w: int, h: int) -> Path:
    """A valid 1-bit PNG of w x h zero pixels written without holding the image: the deflate stream
    is full-flushed after each block of rows, so every later block compresses to the same bytes,
    and the Adler-32 of n zero bytes is (n mod 65521) << 16 | 1. 60000x60000 (3.6 G pixels): 0.4 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (w + 7) // 8)
    rows = max(1, min(h, (1 << 20) // len(row)))
    c = zlib.compressobj(9)
    first = c.compress(row * rows) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(row * rows) + c.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(h, rows)
    parts = [first] + [again] * (full - 1) + ([c.compress(row * rest) + c.flush(zlib.Z_FULL_FLUSH)] if rest else [])
    idat = b"".join(parts) + b"\x03\x00" + struct.pack(">I", ((len(row) * h % 65521) << 16) | 1)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def ppm_header(path: Path, w: int, h: int) -> Path:
    path.write_bytes(b"P6\n%d %d\n255\n" % (w, h) + b"\x80" * 300)
    return path


def bmp_header(path: Path, w: int, h: int) -> Path:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + 40 + 300, 0, 0, 54) + info + b"\x80" * 300)
    return path


def small_png(path: Path, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny captioner artifact, as `mmedge export captioner --out DIR` writes it."""
    out = tmp_path_factory.mktemp("bomb-art")
    assert run(["export", "captioner", "--format", "onnx", "--config", "tiny", "--out", str(out)]) == 0
    (found,) = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    return found


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12000x12000 (144 M pixels) in 2 MB: 432 MB decoded at full size."""
    path = tmp_path_factory.mktemp("bomb-jpeg") / "huge.jpg"
    Image.new("RGB", (12000, 12000), (90, 30, 200)).save(path, quality=30)
    return path


# ----------------------------------------------------------------------------- WAV


@pytest.mark.parametrize("rate, frames", [(10_000_019, 4096), (4_294_967_291, 4096), (1, 1_000_000), (999, 4000),
                                          (384_001, 4000), (0, 100)])
def test_wav_rate_out_of_range_is_refused_before_work(tmp_path: Path, rate: int, frames: int) -> None:
    path = wav(tmp_path / "rate.wav", rate, b"\x01\x00" * frames)
    with pytest.raises(InputError) as info:
        A.read_wav(path, sample_rate=16000)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert ("outside the supported range 1000..384000 Hz" in msg) if rate else ("malformed fmt chunk" in msg)


def test_wav_rate_bombs_stay_small_in_a_capped_child(tmp_path: Path) -> None:
    for rate in (10_000_019, 4_294_967_291, 1):
        wav(tmp_path / f"r{rate}.wav", rate, b"\x01\x00" * (4096 if rate > 1 else 1_000_000))
    code = textwrap.dedent("""
        from mmedge.errors import InputError
        from mmedge.runtime.audio import read_wav
        for rate in (10_000_019, 4_294_967_291, 1):
            try:
                read_wav(f"r{rate}.wav", sample_rate=16000)
            except InputError as e:
                print(e)
    """)
    rc, out, err, peak = child(tmp_path, "py", code)
    assert rc == 0, err
    assert out.count("outside the supported range") == 3
    assert peak < PEAK_RSS_MB


@pytest.mark.parametrize("rate", [1000, 8000, 44_057, 96_000, 383_999, 384_000])
def test_wav_supported_odd_rates_resample_bounded(tmp_path: Path, rate: int) -> None:
    t = np.arange(rate // 4) / rate
    x = (0.5 * np.sin(2 * np.pi * 300.0 * t) * 32767).astype("<i2")
    y, sr = A.read_wav(wav(tmp_path / "odd.wav", rate, x.tobytes()), sample_rate=16000)
    assert sr == 16000 and y.shape == (-(-x.size * 16000 // rate),) and np.isfinite(y).all()
    # still a 300 Hz sine at the new rate (away from the zero-padded ends)
    ref = 0.5 * np.sin(2 * np.pi * 300.0 * np.arange(y.size) / 16000)
    mid = slice(y.size // 5, -y.size // 5)
    assert np.abs(y[mid] - ref[mid]).max() < 0.02


def test_resample_filter_is_bounded_for_awkward_ratios() -> None:
    x = np.random.default_rng(0).standard_normal(5000)
    y = A.resample(x, 383_999, 16000)  # gcd 1: a 7.7 M-tap filter if built exactly
    assert y.shape == (-(-5000 * 16000 // 383_999),)
    assert R._resample_filter.cache_info().currsize <= 16
    assert max(len(h) for h in [R._resample_filter(*R._approximate_ratio(16000, 383_999))]) <= 20 * 4096 + 1
    with pytest.raises(InputError, match="more than 1000x"):
        A.resample(x, 1, 1_000_000)


@pytest.mark.parametrize("declared", [10**6, 0xFFFFFFFF, 0xFFFFFFFE])
def test_wav_data_chunk_larger_than_the_file(tmp_path: Path, declared: int) -> None:
    path = wav(tmp_path / "liar.wav", 16000, b"\x00\x01" * 100, declared=declared)
    with pytest.raises(InputError, match="truncated data chunk") as info:
        A.read_wav(path)
    assert str(path) in str(info.value)


def test_wav_huge_fmt_chunk_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "fmt.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + struct.pack("<I", 0xFFFFFF00) + b"\x01\x00" * 20)
    with pytest.raises(InputError, match="malformed fmt chunk"):
        A.read_wav(path)


def test_wav_too_long_is_refused_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = wav(tmp_path / "long.wav", 1000, b"\x01\x00" * 600_000)  # 600 s at 1 kHz: 1.2 MB
    # read_wav's own module (runtime/wav.py) is where it looks these up
    monkeypatch.setattr(W, "_decode_samples", lambda *a: pytest.fail("decoded before the duration check"))
    monkeypatch.setattr(W, "resample", lambda *a: pytest.fail("resampled before the duration check"))
    with pytest.raises(InputError, match=r"long.wav: 600 s is longer than the 300 s") as info:
        A.read_wav(path, sample_rate=16000, max_seconds=300)
    assert "\n" not in str(info.value)


def test_wav_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        A.read_wav(fifo)


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("make, w, h", [(png_bomb, 60000, 60000), (png_bomb, 15000, 11000), (ppm_header, 60000, 60000),
                                        (ppm_header, 13000, 13000), (bmp_header, 40000, 40000),
                                        (bmp_header, 9000, 9000)])
def test_declared_size_bombs_are_refused_before_decoding(tmp_path: Path, make, w: int, h: int) -> None:
    path = make(tmp_path / f"bomb.{ {png_bomb: 'png', ppm_header: 'ppm', bmp_header: 'bmp'}[make] }", w, h)
    for fn in (read_image, lambda p: preprocess_image(p, PARAMS)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DecompressionBombWarning either
            with pytest.raises(InputError, match="megapixel limit") as info:
                fn(path)
        msg = str(info.value)
        assert msg.startswith(str(path)) and "\n" not in msg
        if w * h > MAX_PIXELS:
            assert "160-megapixel limit" in msg
        else:
            assert w * h > MAX_DECODE_PIXELS and "50-megapixel limit for decoding at full size" in msg


def test_png_bomb_through_the_cli_is_one_line_and_small(tmp_path: Path, art: Path) -> None:
    bomb = png_bomb(tmp_path / "bomb.png", 60000, 60000)
    big = png_bomb(tmp_path / "big.png", 12000, 12000)  # 140 KB; 1.6 GB before the limits
    for path in (bomb, big):
        rc, out, err, peak = child(tmp_path, "cli", ["caption", str(path), "-a", str(art), "--threads", "1"])
        assert rc == EXIT_USAGE and out == ""
        one_error_line(err, str(path), "megapixel limit")
        assert peak < PEAK_RSS_MB


def test_huge_jpeg_is_decoded_at_reduced_size(tmp_path: Path, art: Path, big_jpeg: Path) -> None:
    rc, out, err, peak = child(tmp_path, "cli", ["caption", str(big_jpeg), "-a", str(art), "--threads", "1", "--json"])
    assert rc == 0, err
    assert json.loads(out)["results"][0]["image"] == str(big_jpeg)
    assert peak < PEAK_RSS_MB
    with pytest.raises(InputError, match="50-megapixel limit for decoding at full size"):
        read_image(big_jpeg)  # full size (refocus): refused, not decoded


def test_reduced_decoding_only_for_jpegs_at_least_4x_the_model_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    smooth = (np.kron(rng.random((256, 320, 3)), np.ones((4, 4, 1))) * 255).astype(np.uint8)  # 1280x1024
    src = tmp_path / "photo.jpg"
    Image.fromarray(smooth).save(src, quality=95)

    def full(path: Path, size: int) -> np.ndarray:  # the same preprocessing of a full-size decode
        with Image.open(path) as im:
            return preprocess_image(np.asarray(im.convert("RGB")), {**PARAMS, "image_size": size})

    small = {**PARAMS, "image_size": 300}  # 1024 < 4 x 300: decoded exactly as before
    np.testing.assert_array_equal(preprocess_image(src, small), full(src, 300))
    x = preprocess_image(src, PARAMS)  # 1024 >= 4 x 256: decoded at 1/2 (640x512), then resized
    assert x.shape == (3, 256, 256)
    assert not np.array_equal(x, full(src, 256))
    assert np.abs(x - full(src, 256)).mean() < 0.05  # slightly different (about 1/255), same picture
    png = tmp_path / "photo.png"
    Image.fromarray(smooth).save(png)  # other formats: always exact
    np.testing.assert_array_equal(preprocess_image(png, PARAMS), full(png, 256))


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a\xff\xff\xff\xff" + b"\x00" * 30,
                                     b"BM" + b"\xff" * 60, b"P6\n-5 7\n255\n", b"II*\x00" + b"\xff" * 40])
def test_any_pil_failure_is_one_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@pytest.mark.parametrize("fill", [np.nan, np.inf, "half"])
def test_nan_float_image_is_refused_not_captioned_black(tmp_path: Path, fill) -> None:
    arr = np.full((20, 30), np.nan if fill == "half" else fill, np.float32)
    if fill == "half":
        arr[:10] = 0.5
    path = tmp_path / "nan.tif"
    Image.fromarray(arr, "F").save(path)
    with pytest.raises(InputError, match="nan.tif: image has NaN or Inf pixels"):
        preprocess_image(path, PARAMS)
    with pytest.raises(InputError, match="image has NaN or Inf pixels"):
        preprocess_image(Image.fromarray(arr, "F"), PARAMS)


def test_mixed_folder_with_one_bomb_through_caption_out(tmp_path: Path, art: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        small_png(photos / f"a{i}.png", i)
    png_bomb(photos / "b-bomb.png", 60000, 60000)
    ppm_header(photos / "c-bomb.ppm", 20000, 20000)
    small_png(photos / "d.png", 7)
    out = tmp_path / "x.jsonl"
    rc, stdout, err, peak = child(tmp_path, "cli", ["caption", str(photos), "-a", str(art), "--out", str(out),
                                                    "--threads", "1", "--shard-size", "2"])
    assert rc == 0, err
    assert "Traceback" not in err and peak < PEAK_RSS_MB
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [Path(r["image"]).name for r in recs] == ["a0.png", "a1.png", "a2.png", "b-bomb.png", "c-bomb.ppm", "d.png"]
    errors = {Path(r["image"]).name: r["error"] for r in recs if "error" in r}
    assert set(errors) == {"b-bomb.png", "c-bomb.ppm"}
    assert all("megapixel limit" in e for e in errors.values())
    assert all(r.get("caption") for r in recs if "error" not in r)


def test_caption_without_out_streams_in_batches(tmp_path: Path, art: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from mmedge.runtime.pipelines import Captioner

    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(7):
        small_png(photos / f"p{i}.png", i)
    sizes: list[int] = []
    real = Captioner.caption

    def spy(self, images, *a, **k):
        sizes.append(len(images))
        return real(self, images, *a, **k)

    monkeypatch.setattr(Captioner, "caption", spy)
    assert run(["caption", str(photos), "-a", str(art), "--shard-size", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sizes == [3, 3, 1] and len(lines) == 7
    assert run(["caption", str(photos), "-a", str(art), "--shard-size", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in doc["results"]] == sorted(str(p) for p in photos.iterdir())
    assert [ln.split(": ", 1)[1] for ln in lines] == [f"{r['caption']}  (score {r['score']:.3f})" for r in doc["results"]]


# ----------------------------------------------------------------------------- file names that are not UTF-8


def test_non_utf8_file_names_print_escaped(tmp_path: Path, art: Path) -> None:
    d = os.fsencode(tmp_path / "names")
    os.mkdir(d)
    small_png(Path(os.fsdecode(d + b"/caf\xe9.png")))
    small_png(Path(os.fsdecode(d + b"/ok.png")), 3)
    env = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONIOENCODING": "", "PYTHONUTF8": "0"}
    rc, out, err, _ = child(tmp_path, "cli", ["caption", os.fsdecode(d), "-a", str(art), "--threads", "1"], env)
    assert rc == 0, err
    assert len(out.splitlines()) == 2 and "caf\\xe9.png: " in out
    rc, out, err, _ = child(tmp_path, "cli", ["caption", os.fsdecode(d), "-a", str(art), "--threads", "1", "--json"],
                            env)
    assert rc == 0, err
    assert len(json.loads(out)["results"]) == 2
    bad = Path(os.fsdecode(d + b"/bomb\xff.png"))
    png_bomb(bad, 60000, 60000)
    rc, out, err, _ = child(tmp_path, "cli", ["caption", str(bad), "-a", str(art), "--threads", "1"], env)
    assert rc == EXIT_USAGE
    one_error_line(err, "bomb\\xff.png", "megapixel limit")


# ----------------------------------------------------------------------------- depth maps


@pytest.mark.parametrize("name, make, match", [
    ("strings.npy", lambda p: np.save(p, np.array([["1.0", "2.0"], ["3", "4"]])), "depth must be numbers"),
    ("bytes.npy", lambda p: np.save(p, np.array([[b"a", b"b"]])), "depth must be numbers"),
    ("objects.npy", lambda p: np.save(p, np.array([[1.0, None]], dtype=object), allow_pickle=True),
     "not a numpy depth array"),
    ("complex.npy", lambda p: np.save(p, np.ones((4, 4), np.complex64)), "depth must be numbers"),
    ("struct.npy", lambda p: np.save(p, np.zeros((4, 4), [("a", "<f4"), ("b", "<i4")])), "depth must be numbers"),
    ("cube.npy", lambda p: np.save(p, np.ones((4, 4, 3), np.float32)), "expected an HxW depth map"),
    ("empty.npy", lambda p: np.save(p, np.ones((0, 4), np.float32)), "depth"),
    ("text.npy", lambda p: p.write_text("not numpy"), "not a numpy depth array"),
])
def test_depth_npy_that_is_not_numbers(tmp_path: Path, name: str, make, match: str) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError, match=match) as info:
        read_depth(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_depth_npy_header_claiming_more_than_the_file(tmp_path: Path) -> None:
    path = tmp_path / "liar.npy"
    head = "{'descr': '<f4', 'fortran_order': False, 'shape': (90000, 90000), }"
    head = head.ljust(64 - 10 - 1) + "\n"  # 32 GB declared, 64 bytes present
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode("latin1") + b"\x00" * 64)
    code = f"""
from mmedge.errors import InputError
from mmedge.runtime.image import read_depth
try:
    read_depth({str(path)!r})
except InputError as e:
    print(e)
"""
    rc, out, err, peak = child(tmp_path, "py", code)
    assert rc == 0, err
    assert out.startswith(str(path)) and len(out.splitlines()) == 1
    assert peak < PEAK_RSS_MB


def test_depth_of_another_shape_and_bad_arrays(tmp_path: Path) -> None:
    from mmedge.runtime.pipelines import Refocuser

    ref = Refocuser.__new__(Refocuser)  # the checks run before any session
    img = np.zeros((30, 40, 3), np.uint8)
    depth = tmp_path / "d.npy"
    np.save(depth, np.ones((5, 5), np.float32))
    with pytest.raises(InputError, match="depth map is 5x5 but the image is 40x30"):
        ref.refocus(img, depth, 0.5, 2.0)
    with pytest.raises(InputError, match="depth must be numbers"):
        ref.refocus(img, np.full((30, 40), "x"), 0.5, 2.0)
    with pytest.raises(InputError, match="finite and non-negative"):
        ref.refocus(img, np.full((30, 40), np.nan, np.float32), 0.5, 2.0)
    with pytest.raises(InputError, match="expected a depth map path or an HxW numpy array"):
        ref.refocus(img, None, 0.5, 2.0)
    with pytest.raises(InputError, match="near must be a number"):
        ref.refocus(img, depth, "near", 2.0)


# ----------------------------------------------------------------------------- the Python API


@pytest.fixture(scope="module")
def captioner(art: Path):
    from mmedge.runtime import load

    return load(art)


def test_caption_accepts_pil_images(captioner, tmp_path: Path) -> None:
    arr = (np.random.default_rng(3).random((40, 48, 3)) * 255).astype(np.uint8)
    (a,) = captioner.caption(Image.fromarray(arr), beam=2, max_len=5)
    (b,) = captioner.caption(arr, beam=np.int64(2), max_len=np.int32(5))
    assert a.caption == b.caption and a.score == b.score
    (c,) = captioner.caption([Image.fromarray(arr).convert("P")], beam=1, max_len=3)
    assert c.tokens


@pytest.mark.parametrize("call, match", [
    (lambda c: c.caption(None), "no images given"),
    (lambda c: c.caption(42), "expected an image path"),
    (lambda c: c.caption([None]), "expected an image path, a PIL image or a uint8 numpy array, got NoneType"),
    (lambda c: c.caption(np.zeros((8, 8, 3), np.uint8), beam=2.0), "beam must be an integer"),
    (lambda c: c.caption(np.zeros((8, 8, 3), np.uint8), beam=True), "beam must be an integer"),
    (lambda c: c.caption(np.zeros((8, 8, 3), np.uint8), beam="3"), "beam must be an integer"),
    (lambda c: c.caption(np.zeros((8, 8, 3), np.uint8), max_len=5.5), "max length must be an integer"),
    (lambda c: c.caption(np.zeros((8, 8, 3), np.uint8), max_len=0), "max length must be >= 1"),
    (lambda c: c.caption(np.zeros((8, 8), np.float32)), "expected a uint8 image array"),
])
def test_python_api_type_errors_are_input_errors(captioner, call, match: str) -> None:
    with pytest.raises(InputError, match=match):
        call(captioner)


@pytest.mark.parametrize("kwargs", [{"threads": "x"}, {"threads": 2.0}, {"threads": True}, {"threads": 0},
                                    {"threads": None, "backend": 3}])
def test_load_option_types(art: Path, kwargs: dict) -> None:
    from mmedge.runtime import load

    with pytest.raises(InputError, match="threads|backend") as info:
        load(art, **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="expected an artifact directory path"):
        load(None)
