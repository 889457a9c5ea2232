"""RandAugment (Cubuk et al. 2020) as in torchvision `transforms.RandAugment`.

LieRE's CIFAR recipe is torchvision's `RandAugment(num_ops=2, magnitude=14)`: `num_ops` times,
pick one of 14 ops uniformly and apply it at the fixed magnitude bin `magnitude` of 31 bins
(signed ops get a random sign). Geometric ops fill with black and use nearest-neighbour
sampling, as torchvision does. Works on uint8 [H, W, 1|3] numpy images.

Differences from torchvision, all immaterial for training: shear/translate are PIL affine
transforms about the top-left corner (torchvision: same matrix, computed via `F.affine`);
solarize thresholds are floats in both.
"""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from data import augment

NUM_BINS = 31  # torchvision's default `num_magnitude_bins`.
_NEAREST = Image.Resampling.NEAREST


def _magnitudes(height: int, width: int) -> dict[str, tuple[np.ndarray, bool]]:
  """op name -> (magnitude per bin [NUM_BINS], signed). torchvision's `_augmentation_space`."""
  bins = NUM_BINS
  enhance = np.linspace(0.0, 0.9, bins)
  return {
      "identity": (np.zeros(bins), False),
      "shear_x": (np.linspace(0.0, 0.3, bins), True),
      "shear_y": (np.linspace(0.0, 0.3, bins), True),
      "translate_x": (np.linspace(0.0, 150.0 / 331.0 * width, bins), True),
      "translate_y": (np.linspace(0.0, 150.0 / 331.0 * height, bins), True),
      "rotate": (np.linspace(0.0, 30.0, bins), True),
      "brightness": (enhance, True),
      "color": (enhance, True),
      "contrast": (enhance, True),
      "sharpness": (enhance, True),
      "posterize": (8 - np.round(np.arange(bins) / ((bins - 1) / 4)).astype(int), False),
      "solarize": (np.linspace(255.0, 0.0, bins), False),
      "autocontrast": (np.zeros(bins), False),
      "equalize": (np.zeros(bins), False),
  }


OPS = tuple(_magnitudes(1, 1))


def apply_op(image: Image.Image, op: str, magnitude: float) -> Image.Image:
  """Applies one RandAugment op at a (signed) magnitude to a PIL image."""
  size = image.size
  if op == "identity":
    return image
  if op == "shear_x":
    return image.transform(size, Image.Transform.AFFINE, (1, magnitude, 0, 0, 1, 0), _NEAREST,
                           fillcolor=0)
  if op == "shear_y":
    return image.transform(size, Image.Transform.AFFINE, (1, 0, 0, magnitude, 1, 0), _NEAREST,
                           fillcolor=0)
  if op == "translate_x":
    return image.transform(size, Image.Transform.AFFINE, (1, 0, int(magnitude), 0, 1, 0),
                           _NEAREST, fillcolor=0)
  if op == "translate_y":
    return image.transform(size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, int(magnitude)),
                           _NEAREST, fillcolor=0)
  if op == "rotate":
    return image.rotate(magnitude, _NEAREST, fillcolor=0)
  if op in ("brightness", "color", "contrast", "sharpness"):
    enhancer = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
                "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}[op]
    return enhancer(image).enhance(1.0 + magnitude)
  if op == "posterize":
    return ImageOps.posterize(image, int(magnitude))
  if op == "solarize":
    return ImageOps.solarize(image, magnitude)
  if op == "autocontrast":
    return ImageOps.autocontrast(image)
  if op == "equalize":
    return ImageOps.equalize(image)
  raise ValueError(f"op: unknown RandAugment op {op!r}; allowed: {list(OPS)}")


def rand_augment(image: np.ndarray, rng: np.random.Generator, num_ops: int,
                 magnitude: int) -> np.ndarray:
  """torchvision `RandAugment(num_ops, magnitude, num_magnitude_bins=31)`.

  Args:
    image: uint8 [H, W, C].
    rng: the example's generator.
    num_ops: ops applied in sequence.
    magnitude: bin index in [0, NUM_BINS).

  Returns:
    uint8 [H, W, C].
  """
  if not 0 <= magnitude < NUM_BINS:
    raise ValueError(f"magnitude: {magnitude} not in [0, {NUM_BINS})")
  table = _magnitudes(*image.shape[:2])
  pil = augment.to_pil(image)
  for _ in range(num_ops):
    op = OPS[int(rng.integers(len(OPS)))]
    values, signed = table[op]
    value = float(values[magnitude])
    if signed and rng.integers(2):
      value = -value
    pil = apply_op(pil, op, value)
  return augment.from_pil(pil)
