"""Image loading and preprocessing with PIL and numpy, as the tutorial does it:
RGB, resize to the model's size (bilinear, as scipy's imresize did through PIL),
scale to [0, 1], ImageNet mean/std, CHW float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmedge.errors import InputError

ImageLike = Union[str, Path, np.ndarray]


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grayscale: stretch to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # flatten transparency onto white
        img = Image.alpha_composite(bg, img)
    return img.convert("RGB")


def read_image(path: str | Path) -> np.ndarray:
    """Read any image PIL knows as HxWx3 uint8 RGB (grayscale and RGBA converted)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image not found")
    try:
        with Image.open(p) as img:
            img.load()
            return np.asarray(_to_rgb(img), dtype=np.uint8)
    except UnidentifiedImageError:
        raise InputError(f"{p}: not an image PIL can read (expected PNG, JPEG, BMP, ...)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{p}: unreadable or truncated image ({e})") from None


def as_rgb_array(image: ImageLike, name: str = "image") -> np.ndarray:
    """A path or an HxW / HxWx{1,3,4} uint8 array -> HxWx3 uint8."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 image array, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"{name}: expected an HxWx3 image array, got shape {list(arr.shape)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        arr = np.asarray(_to_rgb(Image.fromarray(arr, "RGBA")))
    return arr


def preprocess_image(image: ImageLike, params: dict[str, Any], name: str = "image") -> np.ndarray:
    """-> [3, S, S] float32 normalised as in the manifest's preprocessing block."""
    rgb = as_rgb_array(image, name)
    size = int(params["image_size"])
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    x = rgb.astype(np.float32) * np.float32(params.get("scale", 1.0 / 255.0))
    mean = np.asarray(params["mean"], np.float32)
    std = np.asarray(params["std"], np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def read_depth(path: str | Path, scale: float | None = None) -> np.ndarray:
    """A depth map: `.npy` (metres, HxW) or a grayscale image times `scale`.

    Default scales: 16-bit PNG in millimetres (x 0.001), 8-bit as 0..10 m (x 10/255).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: depth map not found")
    if p.suffix.lower() == ".npy":
        try:
            d = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"{p}: not a numpy depth array ({e})") from None
    else:
        try:
            with Image.open(p) as img:
                img.load()
                sixteen = img.mode.startswith("I")
                d = np.asarray(img if sixteen else img.convert("L"), dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise InputError(f"{p}: unreadable depth image ({e})") from None
        d = d * (scale if scale is not None else (0.001 if sixteen else 10.0 / 255.0))
    d = np.asarray(d, dtype=np.float32)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise InputError(f"{p}: expected an HxW depth map, got shape {list(d.shape)}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise InputError(f"{p}: depth must be finite and non-negative")
    return d
