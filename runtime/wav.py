"""WAV files: a validating reader (PCM 8-32-bit, IEEE float, EXTENSIBLE) and an atomic 16-bit writer.

A WAV path comes from the user, so every header field is checked (against the file's real size
and the supported rates and encodings) before a sample is read: a bad or hostile file costs one
InputError, never memory or time.
"""

from __future__ import annotations

import os
import stat
import struct
import wave
from typing import Any

import numpy as np

from mmedge.atomic import atomic_path
from mmedge.errors import InputError
from mmedge.runtime.audio_checks import as_int
from mmedge.runtime.resample import resample

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x0161: "WMA",
    0x1610: "AAC",
    0xF1AC: "FLAC",
}


MIN_SAMPLE_RATE = 1_000  # the sample rates read_wav accepts, in Hz (checked before any decoding)
MAX_SAMPLE_RATE = 384_000
_MAX_FMT_CHUNK = 1 << 16  # a fmt chunk is 16..40 bytes; anything this large is not a WAV header


def _parse_riff(f: Any, file_size: int, name: str) -> tuple[dict, int, int]:
    """The fmt fields and (offset, size) of the data chunk of a RIFF/WAVE file, reading only the
    chunk headers (the data chunk's size is checked against the file's real size, not trusted)."""
    if file_size == 0:
        raise InputError(f"{name}: empty file, expected a RIFF/WAVE file")
    head = f.read(12)
    if head[:4] in (b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        raise InputError(f"{name}: {head[:4].decode()} WAV files are not supported; expected a little-endian RIFF/WAVE file")
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise InputError(f"{name}: not a RIFF/WAVE file")
    fmt = None
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            break
        chunk_id, size = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or size > _MAX_FMT_CHUNK or body + size > file_size:
                raise InputError(f"{name}: truncated or malformed fmt chunk")
            raw = f.read(size)
            if len(raw) < size:
                raise InputError(f"{name}: truncated or malformed fmt chunk")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", raw, 0)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack_from("<H", raw, 24)[0]  # first two bytes of the sub-format GUID
            fmt = {"tag": tag, "channels": channels, "rate": rate, "block_align": block_align, "bits": bits}
        elif chunk_id == b"data":
            if fmt is None:
                raise InputError(f"{name}: data chunk before the fmt chunk; not a valid WAV file")
            available = file_size - body
            if size > available:
                raise InputError(f"{name}: truncated data chunk (header says {size} bytes, file has {available})")
            return fmt, body, size
        pos = body + size + (size & 1)
    if fmt is None:
        raise InputError(f"{name}: no fmt chunk; not a valid WAV file")
    raise InputError(f"{name}: no data chunk; the file is truncated or not a valid WAV file")


def _check_format(fmt: dict, size: int, name: str, max_seconds: float | None) -> str:
    """The sample encoding; refuses a malformed or out-of-range header before any sample is read."""
    tag, channels, block_align, rate = fmt["tag"], fmt["channels"], fmt["block_align"], fmt["rate"]
    if channels < 1 or rate < 1 or block_align < 1 or block_align % channels:
        raise InputError(f"{name}: malformed fmt chunk (channels={channels}, rate={rate}, block_align={block_align})")
    width = block_align // channels
    if tag == _WAVE_FORMAT_PCM and width in (1, 2, 3, 4):
        encoding = f"pcm{8 * width}"
    elif tag == _WAVE_FORMAT_IEEE_FLOAT and width in (4, 8):
        encoding = f"float{8 * width}"
    else:
        kind = _FORMAT_NAMES.get(tag) or {1: "PCM", 3: "IEEE float"}.get(tag, f"format tag 0x{tag:04x}")
        raise InputError(
            f"{name}: unsupported WAV encoding {kind} ({8 * width}-bit); "
            "expected PCM 8/16/24/32-bit or IEEE float 32/64-bit"
        )
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"{name}: sample rate {rate} Hz is outside the supported range "
                         f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    seconds = (size // block_align) / rate
    if max_seconds is not None and seconds > max_seconds:
        raise InputError(f"{name}: {seconds:.0f} s is longer than the {max_seconds:.0f} s this pipeline accepts; "
                         "cut it into clips")
    return encoding


def _decode_samples(data: bytes, fmt: dict, offset: int, size: int, name: str, encoding: str) -> np.ndarray:
    channels, block_align = fmt["channels"], fmt["block_align"]
    n_frames = size // block_align
    if n_frames == 0:
        raise InputError(f"{name}: no audio samples")
    count = n_frames * channels
    if encoding == "pcm8":
        x = (np.frombuffer(data, np.uint8, count, offset).astype(np.float32) - 128.0) * (1.0 / 128.0)
    elif encoding == "pcm16":
        x = np.frombuffer(data, "<i2", count, offset).astype(np.float32) * (1.0 / 32768.0)
    elif encoding == "pcm24":
        raw = np.frombuffer(data, np.uint8, 3 * count, offset).reshape(count, 3)
        wide = np.zeros((count, 4), dtype=np.uint8)
        wide[:, 1:] = raw  # sample << 8 as little-endian int32: the sign comes for free
        x = wide.view("<i4").reshape(count).astype(np.float32) * (1.0 / 2**31)
    elif encoding == "pcm32":
        x = np.frombuffer(data, "<i4", count, offset).astype(np.float32) * (1.0 / 2**31)
    else:
        x = np.frombuffer(data, "<f4" if encoding == "float32" else "<f8", count, offset).astype(np.float32)
        if not np.isfinite(x).all():
            raise InputError(f"{name}: contains NaN or Inf samples")
    return x.reshape(n_frames, channels).T


def read_wav(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True,
             max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a WAV file as float32 in [-1, 1]: ``([T], rate)`` when mono, else ``([channels, T], rate)``.

    Encodings: PCM unsigned 8-bit, signed 16/24/32-bit, IEEE float 32/64-bit, plain or
    WAVE_FORMAT_EXTENSIBLE (float samples are kept as stored, not clipped).  Channels are
    averaged when ``mono``.  With ``sample_rate`` set and different from the file's, the audio is
    resampled (:func:`resample`) and that rate is returned.

    The RIFF chunks are parsed here rather than with the ``wave`` module, which rejects IEEE
    float files (and, before Python 3.12, WAVE_FORMAT_EXTENSIBLE) and silently shortens a
    truncated data chunk.

    Limits, checked from the header before any sample is read or resampled: the file's rate must
    be ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE`` (1,000..384,000 Hz), the data chunk must fit in the
    file, and with ``max_seconds`` a longer clip is refused.  Only the data chunk is read.
    """
    name = os.fspath(path)
    if sample_rate is not None:
        sample_rate = as_int("sample_rate", sample_rate, minimum=1, where=name)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(name)
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{name}: not a regular file, expected a WAV file")
            fmt, offset, size = _parse_riff(f, st.st_size, name)
            encoding = _check_format(fmt, size, name, max_seconds)
            f.seek(offset)
            data = f.read(size)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, expected a WAV file") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror or e})") from None
    if len(data) < size:
        raise InputError(f"{name}: truncated data chunk (header says {size} bytes, read {len(data)})")
    x = _decode_samples(data, fmt, 0, size, name, encoding)
    rate = fmt["rate"]
    x = x.mean(axis=0, dtype=np.float32) if mono else np.ascontiguousarray(x)
    if sample_rate is not None and sample_rate != rate:
        x, rate = resample(x, rate, sample_rate), sample_rate
    return x, rate


def write_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> None:
    """Write ``[T]`` or ``[channels, T]`` audio as 16-bit PCM, atomically (temp file + os.replace).

    Float input is clipped to [-1, 1] and scaled by 32768 (1.0 becomes 32767), so a 16-bit file
    read by :func:`read_wav` and written back is bit-identical; int16 input is written as is.
    """
    name = os.fspath(path)
    sample_rate = as_int("sample_rate", sample_rate, minimum=1, where=name)
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise InputError(f"{name}: expected audio shaped [T] or [channels, T], got shape {a.shape}")
    if a.dtype == np.int16:
        pcm = a
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{name}: cannot write NaN or Inf samples")
        pcm = np.clip(np.rint(a.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    else:
        raise InputError(f"{name}: expected float or int16 samples, got dtype {a.dtype}")
    pcm = pcm.reshape(1, -1) if pcm.ndim == 1 else pcm
    with atomic_path(os.path.abspath(name), fsync=True) as tmp, open(tmp, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.ascontiguousarray(pcm.T).astype("<i2").tobytes())
