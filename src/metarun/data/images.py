"""One image file as a uint8 array of a given size and colour mode, or a DataError that names the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from metarun.data.cache import DataError

MODES = {1: "L", 3: "RGB"}  # channels -> PIL mode


def resize(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [size, size] (L) or [size, size, 3] (RGB), Lanczos-resized when not already that size."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def read_image(path: Path, size: int, channels: int, fix: str) -> np.ndarray:
    """uint8 [size, size, channels]; `fix` ends the error message (what the user should do)."""
    try:
        with Image.open(path) as image:
            pixels = resize(image.convert(MODES[channels]), size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path} is not a readable image ({e}). {fix}") from None
    return pixels.reshape(size, size, channels)
