"""Random images in a dataset's shapes, made on the run's device, for measurements of speed and memory.

What the images show changes neither: episodes are drawn by index from one uint8 tensor on the device
either way. So the benchmarks can run where the real images are not (miniImageNet's never are here).
Chosen with config overrides, e.g. `data=miniimagenet data._target_=random_images.SyntheticImages` (this
folder on the Python path, as it is for the scripts in it); the dataset's other settings are accepted
and ignored.
"""

from __future__ import annotations

import functools

import torch

from metarun.data.classification import SPLITS, ImageClasses

# Classes per split (train, val, test), as the real datasets have them with metarun's default settings.
CLASSES = {"omniglot": (4800, 688, 1692), "miniimagenet": (64, 16, 20)}


class SyntheticImages(ImageClasses):
    def __init__(self, name: str, image_size: int, channels: int, per_class: int = 20, **unused: object) -> None:
        super().__init__(name)
        self.shape = (per_class, channels, image_size, image_size)

    def setup(self, device: torch.device, ways: int, train: tuple[int, int], test: tuple[int, int],
              validate: bool = True) -> None:
        self.place(_images(self.name, self.shape), device)

    def record(self) -> dict:
        return {**super().record(), "synthetic_images": True}


@functools.cache
def _images(name: str, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Made once per process (gpu_check --dry-run builds many runs in one)."""
    generator = torch.Generator().manual_seed(0)
    return {split: torch.randint(0, 256, (classes, *shape), dtype=torch.uint8, generator=generator)
            for split, classes in zip(SPLITS, CLASSES[name], strict=True)}
