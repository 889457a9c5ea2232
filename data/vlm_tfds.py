"""A tensorflow-datasets image-question-answer dataset in the VLM batch format.

Used by `data.vlm_pipeline` when `config.tfds.name` is set: the records come from
`tfds.data_source` (random access, no TensorFlow needed; the dataset must already be prepared
in `config.tfds.data_dir`), and each becomes a `spatial_scenes.Sample` with the same layout as the
synthetic samples:

  BOS prefix... (VISION_START IMAGE*(h*w) VISION_END) per image, question... answer... EOS

so batching, positions and the batch keys are exactly those of `vlm_pipeline.Collator`.
Images are resized (whole image, no crop, bilinear) to `image_size` x `image_size`, RGB, in
[0, 1]; grey images are repeated to RGB and an alpha channel is dropped. Text goes through
`spatial_scenes.make_tokenizer()` (known words, byte fallback for the rest). The answer is cut to
`tfds.max_answer_len` tokens, then the question is cut at its end if the sample would not fit
in `max_len`. The prefix of filler words is drawn as for the synthetic data (set
min/max_prefix_len to 0 for none). All samples have question_type TFDS_QUESTION_TYPE.

Order: the "train" split visits a fresh permutation of the records each epoch (permutation of
epoch e seeded by (seed, e)), so sample i is a pure function of (seed, i); "eval" reads the
eval split in record order.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
from PIL import Image as PILImage
import tensorflow_datasets as tfds

from data import spatial_scenes
from data import tokenizer as tok


def _text(value: Any, key: str) -> str:
  """A str from a tfds text value: str, bytes, or a sequence of them (the first is used)."""
  if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, (str, bytes)):
    if len(value) == 0:  # pylint: disable=g-explicit-length-test
      raise ValueError(f"{key}: the record has an empty list of texts.")
    value = value[0]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, str):
    return value
  raise ValueError(f"{key}: expected text (str / bytes), got {type(value).__name__}.")


def to_rgb(image: np.ndarray, size: int) -> np.ndarray:
  """float32 [size, size, 3] in [0, 1] from an image array [H, W(, C)] (uint8 or [0, 1])."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image_key: expected an image [H, W, C] with C in (1, 3, 4), got shape "
                     f"{image.shape}.")
  if image.dtype != np.uint8:
    image = np.clip(np.round(np.asarray(image, np.float64) * 255), 0, 255).astype(np.uint8)
  image = image[..., :3]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if image.shape[:2] != (size, size):
    image = np.asarray(PILImage.fromarray(image).resize((size, size), PILImage.BILINEAR))
  return image.astype(np.float32) / 255.0


def record_to_sample(record: dict, config, rng: np.random.Generator) -> spatial_scenes.Sample:
  """One tfds record -> Sample (see the module docstring for the layout and truncation)."""
  t = config.tfds
  for key in (t.image_key, t.question_key, t.answer_key):
    if key not in record:
      raise ValueError(f"tfds key {key!r} is not in the record; it has {sorted(record)} "
                       f"(set config.tfds.image_key / question_key / answer_key).")
  raw = np.asarray(record[t.image_key])
  raw = raw[None] if raw.ndim <= 3 else raw          # [K, H, W, C]
  if len(raw) > config.max_images:
    raise ValueError(f"max_images={config.max_images} is smaller than the {len(raw)} images "
                     f"of a record.")
  images = np.stack([to_rgb(im, config.image_size) for im in raw])
  tk = spatial_scenes.make_tokenizer()
  prefix = tk.encode(spatial_scenes.prefix_words(rng, config))
  question = tk.encode(_text(record[t.question_key], t.question_key))
  answer = tk.encode(_text(record[t.answer_key], t.answer_key))[:t.max_answer_len]
  h, w = spatial_scenes.token_grid(config)
  visual = [[tok.VISION_START], ("visual", 1, h, w), [tok.VISION_END]] * len(images)
  fixed = 1 + len(prefix) + len(images) * (h * w + 2) + len(answer) + 1
  room = config.max_len - fixed
  if room < 1:
    raise ValueError(f"max_len={config.max_len} leaves no room for the question: prefix, "
                     f"{len(images)} image(s) of {h}x{w} tokens and the answer need {fixed}.")
  question = question[:room]
  return spatial_scenes.pack([prefix] + visual + [question], images, answer,
                         spatial_scenes.TFDS_QUESTION_TYPE, question=tuple(tk.decode(question)
                                                                       .split()),
                         answer=tuple(tk.decode(answer).split()))


def make_sample_fn(config, *, seed: int,
                   split: str) -> tuple[Callable[[int], spatial_scenes.Sample], int]:
  """(index -> Sample, number of records) for split "train" or "eval" of config.tfds."""
  t = config.tfds
  if split not in ("train", "eval"):
    raise ValueError(f"split={split!r}; allowed: 'train', 'eval'.")
  tfds_split = t.train_split if split == "train" else t.eval_split
  source = tfds.data_source(t.name, split=tfds_split, data_dir=t.data_dir)
  n = len(source)
  if n == 0:
    raise ValueError(f"tfds {t.name!r} split {tfds_split!r} is empty.")

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    return np.random.default_rng([int(seed), 2, epoch]).permutation(n)

  def sample(index: int) -> spatial_scenes.Sample:
    if split == "train":
      record = source[int(permutation(index // n)[index % n])]
    else:
      record = source[index]
    return record_to_sample(record, config, spatial_scenes.sample_rng(seed, split, index))

  return sample, n
