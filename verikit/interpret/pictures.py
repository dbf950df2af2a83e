"""PNG pictures of an input and its interpretation maps, written with zlib alone (no plotting package):
the input in grey (or RGB), a map in a blue-white-red scale symmetric around 0, and the map over the
input. Small images are enlarged by whole pixels so they can be seen."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DISPLAY_SIZE = 224  # pictures are enlarged to at least about this many pixels a side


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write uint8 pixels [H, W] (grey) or [H, W, 3] (RGB) as an 8-bit PNG."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour = 2 if pixels.ndim == 3 else 0
    rows = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
                           + chunk(b"IEND", b""))


def image_rgb(image: np.ndarray) -> np.ndarray:
    """An input [C, H, W] as RGB floats [H, W, 3] in [0, 1] (min-max scaled; one channel as grey, other
    channel counts as their mean)."""
    picture = image[:3].transpose(1, 2, 0) if image.shape[0] == 3 else np.repeat(image.mean(0)[..., None], 3, 2)
    low, high = float(picture.min()), float(picture.max())
    return (picture - low) / (high - low) if high > low else np.zeros_like(picture)


def diverging(values: np.ndarray) -> np.ndarray:
    """Map values [H, W] to RGB floats [H, W, 3]: blue for the most negative, white at 0, red for the most
    positive (scaled by the largest magnitude)."""
    scale = float(np.abs(values).max()) or 1.0
    level = np.clip(values / scale, -1.0, 1.0)[..., None]
    white, red, blue = np.ones(3), np.array([0.84, 0.15, 0.16]), np.array([0.19, 0.35, 0.75])
    return np.where(level >= 0, white + level * (red - white), white - level * (blue - white))


def resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a map [h, w] to `size` (the map over the input it explains)."""
    if values.shape == tuple(size):
        return values
    tensor = torch.as_tensor(values, dtype=torch.float64)[None, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def enlarge(rgb: np.ndarray) -> np.ndarray:
    """Floats [H, W, 3] in [0, 1] to uint8, each pixel repeated to reach about DISPLAY_SIZE a side."""
    factor = max(1, DISPLAY_SIZE // max(rgb.shape[:2]))
    pixels = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


def write_pictures(folder: Path, stem: str, image: np.ndarray, values: np.ndarray) -> list[Path]:
    """STEM.png (the map) and STEM_overlay.png (half input, half map at the input's size); returns them."""
    rgb = image_rgb(image)
    paths = [folder / f"{stem}.png", folder / f"{stem}_overlay.png"]
    write_png(paths[0], enlarge(diverging(values)))
    write_png(paths[1], enlarge(0.5 * rgb + 0.5 * diverging(resize(values, rgb.shape[:2]))))
    return paths
