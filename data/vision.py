"""Image-classification input pipeline: seeded, resumable at any step, sharded across hosts.

Training stream (a grain `MapDataset`, i.e. every element computable from its index):

  global position g = 0, 1, 2, ...    (example g of the infinite stream)
  epoch e = g // N: a permutation of the N examples seeded by (seed, e)
  augmentation of position g: a generator keyed by (seed, g)
  global batch s = positions [s*B, (s+1)*B); process p of P gets rows [p*b, (p+1)*b), b = B/P
  Mixup/CutMix: rows (2k, 2k+1) mixed, keyed by (seed, their global pair id)

So the global batch of step s is a pure function of (seed, s): it does not depend on the number
of processes, resuming needs only `start_step` (mid-epoch included), and each host reads and
augments only its own rows.

Speed: decoding (in the source's `[i]`) and augmentation run in `worker_processes` grain worker
processes (`IterDataset.mp_prefetch`), each computing whole local batches: worker k of W builds
batches k, k + W, k + 2W, ... of the same index-addressed stream, and the batches are read back
round-robin, so the output is the same for any number of workers (0: in the calling process).
Within each process `num_workers` threads compute batches ahead (`prefetch`); they change
nothing either. Pick worker_processes with benchmarks/bench_data.py (README "Input workers").

Evaluation: every example exactly once, in global batches laid out like the training ones; the
last batch is padded and `mask` marks real rows. Two protocols (`eval_protocol`) at any test
size S: "resize" (shorter side to S / eval_crop_fraction, center crop S: the object is rescaled
with the grid, the papers' resolution-extrapolation protocol) and "canvas" (the image prepared
at the training size T as "resize" would, then placed on a blank S x S canvas at an offset
drawn from (example index, S): the object keeps its size and only the grid grows; S >= T).

Usage:
  config = data.vision.default_config("liere_cifar100")   # or default_config() + overrides
  train = data.vision.make_train_iterator(config, global_batch_size=512, seed=0,
                                          start_step=step, process_index=jax.process_index(),
                                          process_count=jax.process_count())
  batch = next(train)  # {"image": float32 [b, S, S, C], "label": float32 [b, K]}
  for batch in data.vision.make_eval_iterator(config, batch_size=512, image_size=64): ...
"""
import math
from typing import Any, Iterator, Mapping, Sequence

from absl import flags
import grain
import ml_collections
from ml_collections import config_dict
import numpy as np

from data import augment
from data import mixup
from data import randaugment
from data import vision_sources

# Re-exported: the dataset facts are part of this module's interface.
DatasetInfo = vision_sources.DatasetInfo
dataset_info = vision_sources.dataset_info
open_source = vision_sources.open_source

CROPS = ("rrc", "pad", "resize")
EVAL_PROTOCOLS = ("resize", "canvas")
# The canvas offsets: a generator seeded by (CANVAS_SEED, example index, canvas size), the same
# for every run, seed and host, so that every model sees the same test images.
CANVAS_SEED = 20_260_101

# Augmentation recipes of the papers (docs/spec/vision_rope.md §9), as overrides of
# `default_config()`. Each sets every augmentation key, so choosing one is unambiguous.
_NO_AUGMENT = dict(crop="resize", flip=False, randaugment=0, three_augment=False,
                   color_jitter=0.0, mixup=0.0, cutmix=0.0, label_smoothing=0.0)
RECIPES = {
    # Spherical-RoPE paper, CIFAR-100: RRC(32), flip, 3-Augment, color jitter 0.3, Mixup 0.8,
    # CutMix 1.0 (App. G). RRC scale is not stated: torchvision's default (0.08, 1).
    "spherical_cifar100": dict(
        _NO_AUGMENT, name="cifar100", image_size=32, crop="rrc", flip=True,
        three_augment=True, color_jitter=0.3, mixup=0.8, cutmix=1.0),
    # Spherical-RoPE paper, ImageNet: RRC, flip, 3-Augment, color jitter 0.3; no Mixup/CutMix.
    # rope-vit's DeiT-III recipe (ViT-S) is the same augmentation.
    "spherical_imagenet": dict(
        _NO_AUGMENT, name="imagenet2012", image_size=224, crop="rrc", flip=True,
        three_augment=True, color_jitter=0.3),
    # LieRE, CIFAR-100: RandAugment(2, 14) + RandomCrop(32, padding 4) + flip.
    "liere_cifar100": dict(
        _NO_AUGMENT, name="cifar100", image_size=32, crop="pad", crop_padding=4, flip=True,
        randaugment=2, randaugment_magnitude=14),
    # No augmentation (smoke tests, the small grayscale datasets).
    "none": dict(_NO_AUGMENT),
}


def default_config(recipe: str | None = None) -> ml_collections.ConfigDict:
  """Every data option with its default; `recipe` applies one of `RECIPES` on top."""
  c = ml_collections.ConfigDict()
  c.name = "cifar10"  # One of data.vision_sources.DATASETS.
  c.data_dir = config_dict.placeholder(str)  # tfds prepared data (None: tfds default dir);
  #   fashion_mnist: directory of its IDX files (None: /usr/share/datasets/fashion-mnist).
  c.train_split = config_dict.placeholder(str)  # None: the dataset's train split.
  c.eval_split = config_dict.placeholder(str)  # None: the dataset's eval split.
  c.image_size = 32  # Training resolution S (output images are S x S).
  c.max_train_examples = config_dict.placeholder(int)  # Use only the first n (None: all).
  c.max_eval_examples = config_dict.placeholder(int)  # Evaluate only the first n (None: all).
  # Per-image augmentation, in this order:
  c.crop = "pad"  # "rrc": RandomResizedCrop to S; "pad": resize to S, zero-pad, random S crop;
  #                 "resize": resize shorter side to S + center crop (no randomness).
  c.crop_scale = (0.08, 1.0)  # RRC area fraction range.
  c.crop_ratio = (3 / 4, 4 / 3)  # RRC aspect-ratio range.
  c.crop_padding = 4  # "pad": pixels of zero padding per side.
  c.flip = True  # Random horizontal flip.
  c.randaugment = 0  # RandAugment number of ops (0: off).
  c.randaugment_magnitude = 9  # RandAugment magnitude bin in [0, 31).
  c.three_augment = False  # DeiT-III 3-Augment (grayscale | solarize | blur).
  c.color_jitter = 0.0  # Brightness = contrast = saturation jitter strength (0: off).
  # Per-batch:
  c.mixup = 0.0  # Mixup Beta alpha (0: off).
  c.cutmix = 0.0  # CutMix Beta alpha (0: off).
  c.mix_prob = 1.0  # Probability that a pair is mixed (when mixup or cutmix > 0).
  c.mix_switch_prob = 0.5  # Probability of CutMix instead of Mixup when both are on.
  c.label_smoothing = 0.0  # Target = (1 - eps) one-hot + eps / K.
  # Evaluation:
  c.eval_crop_fraction = 1.0  # Resize shorter side to S / f, center-crop S (DeiT: 0.875).
  c.eval_protocol = "resize"  # At test size S: "resize" (the above: the object scales with S)
  #   | "canvas" (the image at the training size, on a blank S x S canvas at a seeded random
  #   offset per example: same object size, larger grid; S >= image_size).
  # Speed (none of these changes the data):
  c.worker_processes = 0  # grain worker processes decoding + augmenting whole batches (0: in
  #   the training process). Size: README "Input workers" / benchmarks/bench_data.py.
  c.num_workers = 2  # Threads computing batches in each process (0: in the calling thread).
  c.prefetch = 2  # Batches computed ahead (per thread pool; per worker process).
  if recipe is not None:
    if recipe not in RECIPES:
      raise ValueError(f"recipe: unknown recipe {recipe!r}; allowed: {sorted(RECIPES)}")
    c.update(RECIPES[recipe])
  return c


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
  if not ok:
    raise ValueError(f"{name}: got {value!r}; allowed: {allowed}")


def validate_config(data_config: Mapping[str, Any] | ml_collections.ConfigDict
                    ) -> dict[str, Any]:
  """Checks every option; returns them as a plain dict (missing keys take their defaults).

  Raises:
    ValueError: naming the first bad option and its allowed values (unknown keys included).
  """
  defaults = default_config().to_dict()
  given = (data_config.to_dict() if isinstance(data_config, ml_collections.ConfigDict)
           else dict(data_config))
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"data_config: unknown options {unknown}; allowed: {sorted(defaults)}")
  c = {**defaults, **given}
  dataset_info(c["name"])
  _check(isinstance(c["image_size"], int) and c["image_size"] > 0, "image_size",
         c["image_size"], "a positive int")
  _check(c["crop"] in CROPS, "crop", c["crop"], str(CROPS))
  lo, hi = c["crop_scale"]
  _check(0 < lo <= hi <= 1, "crop_scale", c["crop_scale"], "(lo, hi) with 0 < lo <= hi <= 1")
  lo, hi = c["crop_ratio"]
  _check(0 < lo <= hi, "crop_ratio", c["crop_ratio"], "(lo, hi) with 0 < lo <= hi")
  _check(isinstance(c["crop_padding"], int) and c["crop_padding"] >= 0, "crop_padding",
         c["crop_padding"], "an int >= 0")
  for key in ("flip", "three_augment"):
    _check(isinstance(c[key], bool), key, c[key], "True or False")
  _check(isinstance(c["randaugment"], int) and c["randaugment"] >= 0, "randaugment",
         c["randaugment"], "an int >= 0 (number of ops; 0 = off)")
  _check(c["randaugment_magnitude"] in range(randaugment.NUM_BINS), "randaugment_magnitude",
         c["randaugment_magnitude"], f"an int in [0, {randaugment.NUM_BINS})")
  for key in ("color_jitter", "mixup", "cutmix"):
    _check(c[key] >= 0, key, c[key], "a float >= 0 (0 = off)")
  for key in ("mix_prob", "mix_switch_prob"):
    _check(0 <= c[key] <= 1, key, c[key], "a probability in [0, 1]")
  _check(0 <= c["label_smoothing"] < 1, "label_smoothing", c["label_smoothing"], "[0, 1)")
  _check(0 < c["eval_crop_fraction"] <= 1, "eval_crop_fraction", c["eval_crop_fraction"],
         "(0, 1]")
  _check(c["eval_protocol"] in EVAL_PROTOCOLS, "eval_protocol", c["eval_protocol"],
         str(EVAL_PROTOCOLS))
  for key in ("max_train_examples", "max_eval_examples"):
    _check(c[key] is None or (isinstance(c[key], int) and c[key] > 0), key, c[key],
           "None or a positive int")
  for key in ("worker_processes", "num_workers", "prefetch"):
    _check(isinstance(c[key], int) and c[key] >= 0, key, c[key], "an int >= 0")
  return c


def _check_sharding(batch_size: int, process_index: int, process_count: int,
                    batch_name: str) -> int:
  """Validates the host layout; returns the local batch size."""
  _check(isinstance(process_count, int) and process_count > 0, "process_count", process_count,
         "a positive int")
  _check(isinstance(process_index, int) and 0 <= process_index < process_count,
         "process_index", process_index, f"an int in [0, {process_count})")
  _check(isinstance(batch_size, int) and batch_size > 0 and batch_size % process_count == 0,
         batch_name, batch_size, f"a positive multiple of process_count={process_count}")
  return batch_size // process_count


def _derive_seeds(seed: int, count: int) -> list[int]:
  """Independent 32-bit seeds for the stages (grain seeds must be < 2**32).

  Hashing (rather than seed, seed + 1, ...) matters: grain shuffles epoch e with seed + e, so
  raw consecutive seeds would make run seed=1 replay epoch 1 of run seed=0.
  """
  return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


# --- Per-example and per-batch transforms (module-level classes: picklable, thread-safe). ---


class _TrainTransform(grain.transforms.RandomMap):
  """Raw example -> {"image": float32 [S, S, C] normalised, "label": int32}."""

  def __init__(self, c: dict[str, Any], info: DatasetInfo):
    self._c, self._info = c, info

  def random_map(self, element, rng: np.random.Generator):
    c, size, image = self._c, self._c["image_size"], element["image"]
    if c["crop"] == "rrc":
      image = augment.random_resized_crop(image, rng, size, c["crop_scale"], c["crop_ratio"])
    else:
      image = augment.resize_shorter_center_crop(image, size)
      if c["crop"] == "pad":
        image = augment.pad_random_crop(image, rng, c["crop_padding"])
    if c["flip"]:
      image = augment.random_horizontal_flip(image, rng)
    if c["randaugment"]:
      image = randaugment.rand_augment(image, rng, c["randaugment"], c["randaugment_magnitude"])
    if c["three_augment"]:
      image = augment.three_augment(image, rng)
    if c["color_jitter"]:
      image = augment.color_jitter(image, rng, c["color_jitter"])
    return {"image": augment.normalize(image, self._info.mean, self._info.std),
            "label": np.int32(element["label"])}


def _with_position(position: int, element: dict[str, Any]) -> dict[str, Any]:
  return {**element, "position": np.int64(position)}


class _Targets(grain.transforms.Map):
  """Batch with labels [b] and positions [b] -> {"image", "label": float32 [b, K]}."""

  def __init__(self, c: dict[str, Any], num_classes: int, mix_seed: int):
    self._c, self._num_classes, self._mix_seed = c, num_classes, mix_seed

  def map(self, element):
    c = self._c
    images = element["image"]
    targets = mixup.one_hot_targets(element["label"], self._num_classes, c["label_smoothing"])
    if c["mixup"] > 0 or c["cutmix"] > 0:
      images, targets = mixup.mix_pairs(
          images, targets, element["position"][0::2] // 2, seed=self._mix_seed,
          mixup_alpha=c["mixup"], cutmix_alpha=c["cutmix"], prob=c["mix_prob"],
          switch_prob=c["mix_switch_prob"])
    return {"image": images, "label": targets}


def canvas_offset(index: int, canvas: int, size: int) -> tuple[int, int]:
  """(top, left) of example `index`'s `size` image on a `canvas` x `canvas` canvas, uniform
  over the valid offsets, a pure function of (index, canvas) (`CANVAS_SEED`)."""
  rng = np.random.default_rng([CANVAS_SEED, int(index), int(canvas)])
  top, left = rng.integers(0, canvas - size + 1, size=2)
  return int(top), int(left)


class _EvalExample(grain.transforms.Map):
  """Index i -> {"image": float32 [S, S, C], "label": int32, "mask": bool}; i >= n is padding.

  `train_size` None: the "resize" protocol; an int T: "canvas", the image resized to T as at
  the training size, on a blank S x S canvas at `canvas_offset(i, S, T)`."""

  def __init__(self, source, num_examples: int, image_size: int, crop_fraction: float,
               info: DatasetInfo, train_size: int | None = None):
    self._source, self._n, self._size = source, num_examples, image_size
    self._crop_fraction, self._info, self._train_size = crop_fraction, info, train_size

  def map(self, element):
    if element >= self._n:
      return {"image": np.zeros((self._size, self._size, self._info.channels), np.float32),
              "label": np.int32(0), "mask": np.False_}
    example = self._source[element]
    if self._train_size is None:
      image = augment.resize_shorter_center_crop(example["image"], self._size,
                                                 self._crop_fraction)
    else:
      image = augment.resize_shorter_center_crop(example["image"], self._train_size,
                                                 self._crop_fraction)
      top, left = canvas_offset(element, self._size, self._train_size)
      image = augment.place_on_canvas(image, self._size, top, left)
    return {"image": augment.normalize(image, self._info.mean, self._info.std),
            "label": np.int32(example["label"]), "mask": np.True_}


def _iterate(ds: grain.MapDataset, c: dict[str, Any]) -> grain.IterDataset:
  """`ds` read in order by `c["num_workers"]` threads and `c["worker_processes"]` processes.

  grain's `mp_prefetch` gives worker k the elements k, k + W, ... of `ds` (after every map,
  since it slices the dataset right before `to_iter_dataset`) and interleaves the workers'
  outputs round-robin, so the sequence equals the single-process one; `ds` must therefore
  contain only one-to-one, stateless transforms (no filter / packing), as here.
  """
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=c["num_workers"],
                                            prefetch_buffer_size=c["prefetch"]))
  if c["worker_processes"]:
    if not flags.FLAGS.is_parsed():
      # grain's worker start-up reads its absl flags (at their defaults); outside an absl app
      # (tests, notebooks, benchmarks) they are unparsed, and reading them would raise.
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=c["worker_processes"], per_worker_buffer_size=max(c["prefetch"], 1)))
  return it


def make_train_iterator(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                        process_index: int = 0, process_count: int = 1,
                        source: Sequence[dict[str, Any]] | None = None
                        ) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches, starting at step `start_step`.

  Args:
    data_config: `default_config()` (possibly overridden).
    global_batch_size: B, summed over processes; a multiple of process_count (and, with
      Mixup/CutMix, of 2 * process_count: pairs never straddle processes).
    seed: int >= 0; fixes the example order, the augmentations and the mixing.
    start_step: first step to produce (resume): the output equals a fresh iterator's batches
      from that step on.
    process_index: p, this process.
    process_count: P.
    source: a random-access sequence of raw examples {"image": uint8 [H, W, C], "label"} to
      read instead of the training split of `data_config.name` (benchmarks, tests); the
      dataset's facts (classes, channels, mean / std) still come from `data_config.name`.

  Returns:
    Iterator of {"image": float32 [b, S, S, C] normalised, "label": float32 [b, K]}, b = B / P:
    rows [p*b, (p+1)*b) of global batch `start_step`, `start_step + 1`, ...
  """
  c = validate_config(data_config)
  local = _check_sharding(global_batch_size, process_index, process_count, "global_batch_size")
  _check(isinstance(seed, (int, np.integer)) and seed >= 0, "seed", seed, "an int >= 0")
  _check(isinstance(start_step, (int, np.integer)) and start_step >= 0, "start_step",
         start_step, "an int >= 0")
  if (c["mixup"] > 0 or c["cutmix"] > 0) and local % 2:
    raise ValueError(f"global_batch_size: Mixup/CutMix pair rows within a process, so "
                     f"global_batch_size / process_count must be even; got {global_batch_size}"
                     f" / {process_count}")
  info = dataset_info(c["name"])
  if source is None:
    source = open_source(c["name"], c["train_split"] or info.train_split, c["data_dir"])
  shuffle_seed, augment_seed, mix_seed = _derive_seeds(int(seed), 3)

  ds = grain.MapDataset.source(source)
  if c["max_train_examples"]:
    ds = ds[:c["max_train_examples"]]
  # shuffle: element g is example perm_{g // N}[g % N], a new permutation each epoch.
  ds = ds.shuffle(seed=shuffle_seed).repeat()
  ds = ds.random_map(_TrainTransform(c, info), seed=augment_seed)  # generator keyed by g
  ds = ds.map_with_index(_with_position)
  # Sub-batch i = positions [i*b, (i+1)*b); global batch s = sub-batches s*P .. s*P + P - 1.
  ds = ds.batch(local, drop_remainder=True)
  ds = ds[process_index::process_count]
  ds = ds[int(start_step):]
  ds = ds.map(_Targets(c, info.num_classes, mix_seed))
  return iter(_iterate(ds, c))


class EvalIterable:
  """Re-iterable evaluation batches; `len()` = batches per pass (the same on every process)."""

  def __init__(self, dataset: grain.MapDataset, config: dict[str, Any],
               num_batches: int, num_examples: int):
    self._dataset, self._config = dataset, config
    self.num_batches, self.num_examples = num_batches, num_examples

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return iter(_iterate(self._dataset, self._config))


def make_eval_iterator(data_config, *, batch_size: int, image_size: int,
                       split: str | None = None, process_index: int = 0,
                       process_count: int = 1) -> EvalIterable:
  """Deterministic, unaugmented pass over an evaluation split at any resolution.

  Args:
    data_config: `default_config()` (possibly overridden).
    batch_size: GLOBAL batch size B (as for training), a multiple of process_count.
    image_size: S, the evaluation resolution (may differ from the training one).
    split: split name (None: `data_config.eval_split`, else the dataset's eval split).
    process_index: p.
    process_count: P.

  Returns:
    An `EvalIterable` of {"image": float32 [b, S, S, C], "label": int32 [b], "mask": bool [b]}
    with b = B / P: rows [p*b, (p+1)*b) of each global batch of consecutive examples; the
    last global batch is padded with zero images, label 0 and mask False. Every process yields
    ceil(n / B) batches, so a multi-host eval step never waits on a missing batch.
  """
  c = validate_config(data_config)
  local = _check_sharding(batch_size, process_index, process_count, "batch_size")
  _check(isinstance(image_size, int) and image_size > 0, "image_size", image_size,
         "a positive int")
  canvas = c["eval_protocol"] == "canvas"
  _check(not canvas or image_size >= c["image_size"], "image_size", image_size,
         f"with eval_protocol='canvas', a size >= the training image_size {c['image_size']} "
         "(the image keeps its training size on the canvas)")
  info = dataset_info(c["name"])
  split = split or c["eval_split"] or info.eval_split
  source = open_source(c["name"], split, c["data_dir"])
  num_examples = len(source)
  if c["max_eval_examples"]:
    num_examples = min(num_examples, c["max_eval_examples"])
  num_batches = math.ceil(num_examples / batch_size)
  ds = grain.MapDataset.range(num_batches * batch_size)
  ds = ds.map(_EvalExample(source, num_examples, image_size, c["eval_crop_fraction"], info,
                           train_size=c["image_size"] if canvas else None))
  ds = ds.batch(local)[process_index::process_count]
  return EvalIterable(ds, c, num_batches, num_examples)
