"""Per-image augmentations and resizing, on uint8 [H, W, C] numpy arrays (C = 1 or 3).

Each random op takes a `np.random.Generator`; the pipeline hands it one generator per example,
keyed by (seed, global example position), which makes every augmented image reproducible. The
ops follow the torchvision / DeiT-III definitions used by the papers' recipes (PIL does the
pixel work, as it does under torchvision for PIL images); interpolation is bicubic as in DeiT.
Grayscale (C = 1) images stay grayscale: ops that only make sense for colour are no-ops there.
"""
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

_BICUBIC = Image.Resampling.BICUBIC


def to_pil(image: np.ndarray) -> Image.Image:
  """uint8 [H, W, 1|3] -> PIL image of mode "L" | "RGB"."""
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def from_pil(image: Image.Image) -> np.ndarray:
  """PIL image of mode "L" | "RGB" -> uint8 [H, W, 1|3]."""
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array


def resize_shorter_center_crop(image: np.ndarray, size: int,
                               crop_fraction: float = 1.0) -> np.ndarray:
  """The evaluation resize: shorter side to `size / crop_fraction`, then central size x size.

  This is torchvision/timm's `Resize(int(size / crop_pct))` + `CenterCrop(size)`, the protocol
  of the resolution-extrapolation experiments (resize, then center-crop to the test size).
  With `crop_fraction=1` a square image is just resized.

  Args:
    image: uint8 [H, W, C].
    size: output side S.
    crop_fraction: fraction of the resized shorter side kept, in (0, 1].

  Returns:
    uint8 [S, S, C].
  """
  h, w = image.shape[:2]
  short = int(math.floor(size / crop_fraction))
  # Aspect-preserving: the longer side scales by the same factor (truncated like torchvision).
  new_h, new_w = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
  pil = to_pil(image)
  if (new_h, new_w) != (h, w):
    pil = pil.resize((new_w, new_h), _BICUBIC)
  top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
  return from_pil(pil.crop((left, top, left + size, top + size)))


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """RandomResizedCrop (Inception crop), torchvision's algorithm.

  Picks a box covering a fraction U(scale) of the area with aspect ratio log-uniform in `ratio`
  (10 tries; else the largest central box within `ratio`), and resizes it to size x size.

  Returns:
    uint8 [S, S, C].
  """
  h, w = image.shape[:2]
  area = h * w
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    crop_w = int(round(math.sqrt(target_area * aspect)))
    crop_h = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_w <= w and 0 < crop_h <= h:
      top = int(rng.integers(0, h - crop_h + 1))
      left = int(rng.integers(0, w - crop_w + 1))
      break
  else:  # Fallback: central crop with the aspect ratio clamped into `ratio`.
    if w / h < min(ratio):
      crop_w, crop_h = w, int(round(w / min(ratio)))
    elif w / h > max(ratio):
      crop_h, crop_w = h, int(round(h * max(ratio)))
    else:
      crop_w, crop_h = w, h
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
  box = (left, top, left + crop_w, top + crop_h)
  return from_pil(to_pil(image).resize((size, size), _BICUBIC, box=box))


def pad_random_crop(image: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
  """torchvision `RandomCrop(size, padding)`: zero-pad each side, crop a random H x W window.

  Args:
    image: uint8 [H, W, C].
    padding: pixels of zeros added on each side.

  Returns:
    uint8 [H, W, C] (same size as the input).
  """
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top = int(rng.integers(0, 2 * padding + 1))
  left = int(rng.integers(0, 2 * padding + 1))
  return padded[top:top + h, left:left + w]


def place_on_canvas(image: np.ndarray, canvas: int, top: int, left: int) -> np.ndarray:
  """`image` on a blank (zero, like `pad_random_crop`'s padding) canvas x canvas image.

  Args:
    image: uint8 [H, W, C] with H + top <= canvas and W + left <= canvas.
    canvas: output side.
    top, left: offset of the image's top-left pixel.

  Returns:
    uint8 [canvas, canvas, C].
  """
  h, w, c = image.shape
  if not (0 <= top <= canvas - h and 0 <= left <= canvas - w):
    raise ValueError(f"place_on_canvas: a {h}x{w} image at (top={top}, left={left}) does not "
                     f"fit a {canvas}x{canvas} canvas.")
  out = np.zeros((canvas, canvas, c), image.dtype)
  out[top:top + h, left:left + w] = image
  return out


def random_horizontal_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors left-right with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def grayscale(image: np.ndarray) -> np.ndarray:
  """ITU-R 601-2 luma (PIL's "L" conversion), kept at C channels (identity for C = 1)."""
  if image.shape[-1] == 1:
    return image
  luma = np.asarray(to_pil(image).convert("L"))
  return np.repeat(luma[..., None], 3, axis=-1)


def solarize(image: np.ndarray, threshold: float = 128) -> np.ndarray:
  """Inverts pixels >= threshold (PIL `ImageOps.solarize`)."""
  return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def gaussian_blur(image: np.ndarray, radius: float) -> np.ndarray:
  """PIL Gaussian blur with standard deviation `radius` pixels."""
  return from_pil(to_pil(image).filter(ImageFilter.GaussianBlur(radius)))


def three_augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """DeiT-III's 3-Augment: one of {grayscale, solarize, Gaussian blur} chosen uniformly.

  As in DeiT-III (`RandomChoice([GrayScale(p=1), Solarization(p=1), GaussianBlur(p=1)])`):
  solarize threshold 128, blur radius U(0.1, 2.0). The recipes follow it with color jitter.
  """
  choice = int(rng.integers(3))
  if choice == 0:
    return grayscale(image)
  if choice == 1:
    return solarize(image)
  return gaussian_blur(image, rng.uniform(0.1, 2.0))


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """torchvision `ColorJitter(strength, strength, strength, hue=0)` on a PIL image.

  Brightness, contrast and saturation, in a random order, each with a factor drawn from
  U[max(0, 1 - strength), 1 + strength] (factor 1 = identity). Saturation does nothing to a
  grayscale image.
  """
  pil = to_pil(image)
  enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  for op in rng.permutation(3):
    factor = rng.uniform(max(0.0, 1 - strength), 1 + strength)
    pil = enhancers[op](pil).enhance(factor)
  return from_pil(pil)


def normalize(image: np.ndarray, mean: tuple[float, ...],
              std: tuple[float, ...]) -> np.ndarray:
  """uint8 [..., C] -> float32 (x / 255 - mean) / std per channel."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (image.astype(np.float32) / 255.0 - mean) / std
