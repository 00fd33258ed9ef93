"""What `mmedge caption DIR|LIST|IMAGE...` means: expand directories and list files into image paths."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from mmedge.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})


def expand_images(args: Iterable[str | Path]) -> list[str]:
    """Image paths in a stable order: a directory gives its images (recursively, sorted by path);
    a .txt/.lst/.list file gives one path per line (relative to the list's folder; blank lines and
    `#` comments skipped); anything else is taken as an image path as given. A top-level
    argument that does not exist is an InputError; a missing file named by a list is left to
    the reader (an `error` record with --out)."""
    out: list[str] = []
    for arg in args:
        p = Path(arg)
        if not p.exists():  # a missing top-level input is a usage error, with --out or without
            raise InputError(f"{p}: image not found (no such file or folder; expected an image, a folder of "
                             "images or a .txt/.lst list)")
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: directory has no images (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            out.extend(_read_list(p))
        else:
            out.append(str(p))
    return out


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the image list ({e})") from None
    lines = [ln.strip() for ln in text.splitlines()]
    paths = [str(path.parent / ln) if not Path(ln).is_absolute() else ln
             for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise InputError(f"{path}: the image list is empty (expected one image path per line)")
    return paths
