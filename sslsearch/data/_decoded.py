"""Image-folder trees decoded once into uint8 tensors, kept on disk as a cache.

An image folder read through a DataLoader decodes every JPEG again each epoch; on a 2-core
machine that costs more than a small CNN's step. ``decode_tree`` decodes a split's
``<class>/<image>`` tree once (resized to ``size`` when given) into an (N, C, H, W) uint8
tensor and its labels, and stores them under the machine's cache (``$SSLSEARCH_CACHE/data`` or
``~/.cache/sslsearch/data``), keyed by a fingerprint of the tree (every file's relative path,
size and modification time) and the size: a changed, added or removed file gives another key, so
the cache is rebuilt, never read stale. The first decode of CIFAR-10's 60,000 JPEGs takes
seconds; later processes (every Ray worker) load the tensors in well under a second.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from sslsearch.errors import DataNotFoundError
from sslsearch.storage import cache_root, write_bytes_atomic

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
FORMAT_VERSION = 1  # bump when what a cache file holds changes


@dataclass(frozen=True)
class DecodedTree:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, the index of the class folder in ``classes``
    classes: tuple[str, ...]  # sorted sub-folder names (torchvision's ImageFolder order)


def list_tree(root: Path) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """The class folders of ``root`` (sorted) and every image as (relative path, class index),
    in a fixed order."""
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a directory")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
    if not classes:
        raise DataNotFoundError(f"{root} holds no class sub-folders (<class>/<image files>)")
    files: list[tuple[str, int]] = []
    for i, c in enumerate(classes):
        names = sorted(n for n in os.listdir(root / c) if n.lower().endswith(IMAGE_SUFFIXES))
        files += [(f"{c}/{n}", i) for n in names]
    if not files:
        raise DataNotFoundError(f"{root}: no image files in its class folders")
    return classes, files


def fingerprint(root: Path, files: list[tuple[str, int]], size: int | None) -> str:
    """A key that changes when any file is added, removed, resized or rewritten."""
    h = hashlib.sha256(f"v{FORMAT_VERSION} size={size}\n".encode())
    for rel, label in files:
        st = os.stat(root / rel)
        h.update(f"{rel}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cache_file(key: str) -> Path:
    return cache_root() / "data" / f"{key}.pt"


def _decode_one(path: Path, size: int | None, mode: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as f:
        im = f.convert(mode)
        if size is not None and im.size != (size, size):
            # the shorter side to ``size``, then the centre square (the eval transform's crop)
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize(
                (max(size, round(w * scale)), max(size, round(h * scale))),
                Image.Resampling.BILINEAR,
            )
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        return data.view(im.size[1], im.size[0], len(mode)).permute(2, 0, 1)


def decode_tree(root: Path, size: int | None = None, channels: int = 3) -> DecodedTree:
    """Every image under ``root/<class>/`` as one uint8 tensor (decoded once per machine)."""
    classes, files = list_tree(root)
    key = fingerprint(root, files, size)
    path = cache_file(key)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            log.info("%s: %d images from the decoded cache %s", root, len(files), path)
            return DecodedTree(blob["images"], blob["labels"], tuple(blob["classes"]))
        except Exception as e:  # a damaged cache file is rebuilt, never trusted
            log.warning("decoded cache %s unreadable (%s): decoding %s again", path, e, root)
    mode = "L" if channels == 1 else "RGB"
    log.info("%s: decoding %d images once (cached at %s)", root, len(files), path)
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        try:
            tensors = list(pool.map(lambda f: _decode_one(root / f[0], size, mode), files))
        except OSError as e:
            raise DataNotFoundError(f"{root}: an image could not be decoded: {e}") from None
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise DataNotFoundError(
            f"{root}: images differ in size ({len(shapes)} sizes); set data.image_size so "
            "that every image is resized to one size"
        )
    tree = DecodedTree(
        torch.stack(tensors).contiguous(),
        torch.tensor([label for _, label in files], dtype=torch.long),
        classes,
    )
    buf = io.BytesIO()
    torch.save({"images": tree.images, "labels": tree.labels, "classes": list(classes)}, buf)
    try:
        write_bytes_atomic(str(path), buf.getvalue())
    except OSError as e:  # a read-only home still trains, it only decodes again next time
        log.warning("could not write the decoded cache %s: %s", path, e)
    return tree


__all__ = ["DecodedTree", "cache_file", "decode_tree", "fingerprint", "list_tree"]
