"""Image loading and preprocessing with PIL and numpy, as the tutorial does it:
RGB, resize to the model's size (bilinear, as scipy's imresize did through PIL),
scale to [0, 1], ImageNet mean/std, CHW float32.

Limits (a hostile file must not cost more memory than its honest size): an image whose header
declares more than `MAX_PIXELS` (width x height) is refused before anything is decoded, and so
is one that would have to be decoded at full size with more than `MAX_DECODE_PIXELS`.  For
captioning (`preprocess_image`), a JPEG at least 4x the model's size on both sides is decoded at
reduced size (libjpeg's DCT scaling by 1/2, 1/4 or 1/8, never below 2x the model's size) before
the usual bilinear resize: the result differs slightly from a full decode (a few levels of 255
on edges) but needs 4-64x less memory and time.  Smaller images, and every other format,
are decoded exactly as before.

Speed (the captioner's fixed cost per image, issue #19), with the same pixels: an image read from
a path is resized as the decoded PIL image (no round trip through a numpy array), an RGB image is
not converted (copied) again, and the normalisation is one float32 pass per channel straight into
the CHW result, in the same operations and order as `(x * scale - mean) / std`, so the same
float32 roundings.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmedge.errors import InputError

ImageLike = Union[str, Path, np.ndarray, Image.Image]
T = TypeVar("T")

MAX_PIXELS = 160_000_000  # width x height an image header may declare (a 12000x12000 photo is 144 M)
MAX_DECODE_PIXELS = 50_000_000  # pixels decoded at full size (RGB: 150 MB; a 16-bit PNG: 400 MB as float64)
_STRETCH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    if img.mode in _STRETCH_MODES:  # 16/32-bit grayscale: stretch to 8 bits
        arr = np.array(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: image has NaN or Inf pixels")
        lo, hi = float(arr.min()), float(arr.max())
        if hi > lo:  # in place, the same operations as (arr - lo) / (hi - lo) * 255.0
            arr -= lo
            arr /= hi - lo
            arr *= 255.0
        else:
            arr[:] = 0.0
        img = Image.fromarray(np.round(arr, out=arr).astype(np.uint8))
        del arr
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # flatten transparency onto white
        img = Image.alpha_composite(bg, img)
    return img if img.mode == "RGB" else img.convert("RGB")  # convert("RGB") of an RGB image is a copy


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.0f}" if n >= 10_000_000 else f"{n / 1e6:.1f}"


def _check_pixels(name: str, size: tuple[int, int], limit: int, what: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InputError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > limit:
        raise InputError(f"{name}: {w}x{h} image ({_megapixels(w * h)} megapixels) is larger than the "
                         f"{_megapixels(limit)}-megapixel limit{what}")


def read_image(path: str | Path, min_size: int | None = None) -> np.ndarray:
    """Read any image PIL knows as HxWx3 uint8 RGB (grayscale and RGBA converted).

    With `min_size` (the size the caller will resize to), a JPEG of at least 4 x min_size on both
    sides is decoded at reduced size, never below 2 x min_size (see the module's docstring).
    """
    return _read(path, min_size, lambda rgb: np.asarray(rgb, dtype=np.uint8))


def _read(path: str | Path, min_size: int | None, finish: Callable[[Image.Image], T]) -> T:
    """Decode `path` to an RGB PIL image and return `finish(image)`; every failure is an InputError."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{p}: image not found") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the image ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a directory, expected an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: not a regular file, expected an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on bombs (our limits apply) and corrupt metadata
            with Image.open(p) as img:
                _check_pixels(str(p), img.size, MAX_PIXELS, "")
                jpeg = img.format in ("JPEG", "MPO")
                if jpeg and min_size is not None and min(img.size) // (2 * max(1, min_size)) >= 2:
                    img.draft(img.mode, (2 * min_size, 2 * min_size))  # DCT scaling: never below 2 x min_size
                _check_pixels(str(p), img.size, MAX_DECODE_PIXELS, " for decoding at full size"
                              + (" (only JPEGs are decoded at reduced size)" if min_size is not None and not jpeg
                                 else ""))
                img.load()
                return finish(_to_rgb(img, str(p)))
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image PIL can read (expected PNG, JPEG, BMP, ...)") from None
    except Image.DecompressionBombError as e:  # PIL's own limit, checked inside Image.open (> 179 M pixels)
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f" ({_megapixels(int(m.group(1)))} megapixels)" if m else ""
        raise InputError(f"{p}: image{size} is larger than the {_megapixels(MAX_PIXELS)}-megapixel limit") from None
    except MemoryError:
        raise InputError(f"{p}: not enough memory to decode this image") from None
    except Exception as e:  # noqa: BLE001 - any failure inside PIL's decoders is a bad file, not a bug here
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{p}: unreadable or truncated image ({detail})") from None


def _is_pathlike(image: Any) -> bool:
    return isinstance(image, (str, os.PathLike))


def as_rgb_array(image: ImageLike, name: str = "image", min_size: int | None = None) -> np.ndarray:
    """A path, a PIL image or an HxW / HxWx{1,3,4} uint8 array -> HxWx3 uint8."""
    if _is_pathlike(image):
        return read_image(os.fspath(image), min_size)
    if isinstance(image, Image.Image):
        try:
            _check_pixels(name, image.size, MAX_DECODE_PIXELS, "")
            return np.asarray(_to_rgb(image, name), dtype=np.uint8)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a lazily loaded PIL image can fail to decode here
            raise InputError(f"{name}: cannot convert the PIL image to RGB ({e})") from None
    if image is None or not isinstance(image, np.ndarray):
        raise InputError(f"{name}: expected an image path, a PIL image or a uint8 numpy array, "
                         f"got {type(image).__name__}")
    arr = image
    if arr.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 image array, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"{name}: expected an HxWx3 image array, got shape {list(arr.shape)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        arr = np.asarray(_to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA")))
    return arr


def _resized(img: Image.Image, size: int) -> np.ndarray:
    """HxWx3 uint8 at size x size (PIL bilinear, as scipy's imresize did)."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def normalize(rgb: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """HxWx3 uint8 -> [3, H, W] float32 `(x * scale - mean) / std`, written channel by channel into
    the CHW result: the same float32 operations in the same order as on the whole HWC array (so
    the same values, bit for bit), without float temporaries of the whole image or a transpose."""
    scale = np.float32(params.get("scale", 1.0 / 255.0))
    mean = np.asarray(params["mean"], np.float32)
    std = np.asarray(params["std"], np.float32)
    out = np.empty((3,) + rgb.shape[:2], np.float32)
    for ch in range(3):
        o = out[ch]
        np.multiply(rgb[:, :, ch], scale, out=o, dtype=np.float32)  # uint8 -> float32 is exact, then one rounding
        np.subtract(o, mean[ch], out=o)
        np.divide(o, std[ch], out=o)
    return out


def preprocess_image(image: ImageLike, params: dict[str, Any], name: str = "image") -> np.ndarray:
    """-> [3, S, S] float32 normalised as in the manifest's preprocessing block."""
    size = int(params["image_size"])
    if _is_pathlike(image):  # resize the decoded image itself: no array round trip
        rgb = _read(os.fspath(image), size, lambda img: _resized(img, size))
    else:
        rgb = as_rgb_array(image, name, min_size=size)
        if rgb.shape[:2] != (size, size):
            rgb = _resized(Image.fromarray(rgb), size)
    return normalize(rgb, params)


def read_depth(path: str | Path, scale: float | None = None) -> np.ndarray:
    """A depth map: `.npy` (metres, HxW, a numeric dtype) or a grayscale image times `scale`.

    Default scales: 16-bit PNG in millimetres (x 0.001), 8-bit as 0..10 m (x 10/255).
    A `.npy` is opened memory-mapped (so its declared shape is checked against the file's real
    size before anything is allocated), never unpickled; images follow `read_image`'s limits.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        raise InputError(f"{p}: depth map not found") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: not a regular file, expected a depth map")
    if p.suffix.lower() == ".npy":
        try:
            m = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - numpy's header parser raises many kinds for a bad file
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{p}: not a numpy depth array ({detail})") from None
        if not isinstance(m, np.ndarray):
            raise InputError(f"{p}: not a single numpy depth array")
        d = _check_depth_array(m, str(p), copy=True)
        del m
        return d
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(p) as img:
                _check_pixels(str(p), img.size, MAX_DECODE_PIXELS, "")
                img.load()
                sixteen = img.mode.startswith("I")
                d = np.asarray(img if sixteen else img.convert("L"), dtype=np.float32)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure inside PIL's decoders is a bad file
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{p}: unreadable depth image ({detail})") from None
    d = d * (scale if scale is not None else (0.001 if sixteen else 10.0 / 255.0))
    return _check_depth_array(d, str(p))


def _check_depth_array(d: Any, name: str, copy: bool = False) -> np.ndarray:
    """HxW (or HxWx1) real numbers, finite and non-negative -> float32 HxW."""
    if d is None or not isinstance(d, np.ndarray):
        raise InputError(f"{name}: expected a depth map path or an HxW numpy array, got {type(d).__name__}")
    if d.dtype.kind not in "fiu":
        raise InputError(f"{name}: depth must be numbers (metres), got dtype {d.dtype}")
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2 or min(d.shape) < 1:
        raise InputError(f"{name}: expected an HxW depth map, got shape {list(d.shape)}")
    _check_pixels(name, (d.shape[1], d.shape[0]), MAX_DECODE_PIXELS, "")
    d = np.array(d, dtype=np.float32) if copy else np.asarray(d, dtype=np.float32)
    if not np.isfinite(d).all() or (d < 0).any():
        raise InputError(f"{name}: depth must be finite and non-negative")
    return d
