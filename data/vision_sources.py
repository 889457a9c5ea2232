"""Image-classification datasets: their facts and random-access sources of raw examples.

A source is a sequence (`len`, `[i]`) of examples `{"image": uint8 [H, W, C], "label": int32 []}`
— the raw stored image, before any resizing or augmentation. Random access is what makes the
pipeline in `data.vision` seedable and resumable at an exact example.

Where the data comes from:
* cifar10, cifar100, imagenet2012: tensorflow-datasets prepared data, read with
  `tfds.data_source` (random access over ArrayRecord files; works without TensorFlow). Prepare it
  once where the raw data is available, e.g.
  `tfds build cifar100 --file_format=array_record --data_dir=DIR` (ImageNet needs its manual
  download), then pass `data_dir=DIR`.
* fashion_mnist: the gzip IDX files of Debian's `dataset-fashion-mnist` package
  (/usr/share/datasets/fashion-mnist), or the same four files in `data_dir`.
* digits: scikit-learn's bundled 8x8 digits (values 0..16, scaled to uint8 0..255); the last
  20% (359 images) are the test split, the first 1438 the train split.
"""
import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from data import idx

# tensorflow_datasets and scikit-learn are imported by the sources that read them, not here:
# every grain worker process (data.vision `worker_processes`) imports this module to unpickle
# its source, and the two (with the jax that scikit-learn pulls in) take seconds to import.

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Facts about one dataset.

  Attributes:
    num_classes: number of labels K.
    channels: image channels C (1 for grayscale datasets, which stay grayscale).
    train_split: default training split name.
    eval_split: default evaluation split name.
    num_train: examples in `train_split`.
    num_eval: examples in `eval_split`.
    mean: per-channel mean of pixel/255 (training data), length C.
    std: per-channel standard deviation of pixel/255, length C.
    native_size: stored image side (None: varies, ImageNet).
    splits: all split names the dataset has.
  """
  num_classes: int
  channels: int
  train_split: str
  eval_split: str
  num_train: int
  num_eval: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  native_size: int | None
  splits: tuple[str, ...]


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DATASETS = {
    # CIFAR statistics: per-channel mean / std of the 50k training images (the "true" std, not
    # the often-copied (0.2023, 0.1994, 0.2010)).
    "cifar10": DatasetInfo(10, 3, "train", "test", 50_000, 10_000,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32,
                           ("train", "test")),
    "cifar100": DatasetInfo(100, 3, "train", "test", 50_000, 10_000,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32,
                            ("train", "test")),
    "imagenet2012": DatasetInfo(1000, 3, "train", "validation", 1_281_167, 50_000,
                                _IMAGENET_MEAN, _IMAGENET_STD, None, ("train", "validation")),
    # Grayscale statistics computed from the training split (checked in the tests).
    "fashion_mnist": DatasetInfo(10, 1, "train", "test", 60_000, 10_000, (0.2860,), (0.3530,),
                                 28, ("train", "test")),
    "digits": DatasetInfo(10, 1, "train", "test", 1438, 359, (0.3055,), (0.3754,), 8,
                          ("train", "test")),
}
_TFDS_NAMES = ("cifar10", "cifar100", "imagenet2012")


def dataset_info(name: str) -> DatasetInfo:
  """Returns the `DatasetInfo` of `name`; ValueError listing the known names otherwise."""
  if name not in DATASETS:
    raise ValueError(f"name: unknown dataset {name!r}; allowed: {sorted(DATASETS)}")
  return DATASETS[name]


class ArraySource:
  """An in-memory source over `images` uint8 [N, H, W, C] and `labels` int [N]."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if images.ndim != 4 or len(images) != len(labels):
      raise ValueError(f"images: expected [N, H, W, C] matching labels [N], got "
                       f"{images.shape} and {labels.shape}")
    self.images = images
    self.labels = labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self.images[index], "label": self.labels[index]}


class TfdsSource:
  """A tfds `data_source` reduced to {"image", "label"} (drops ids, file names, ...)."""

  def __init__(self, name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    try:
      # download=False: this machine has no dataset downloads; an unprepared dataset must fail
      # fast instead of trying to fetch it.
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    # KeyError: tfds 4.9 finds the dataset's metadata but no generated split ("Trying to access
    # `splits['train']` but `splits` is empty").
    except (NotImplementedError, FileNotFoundError, KeyError,
            tfds.core.DatasetNotFoundError) as e:
      raise FileNotFoundError(
          f"No prepared {name!r} (ArrayRecord format) under data_dir={data_dir!r}. Prepare it "
          f"with `tfds build {name} --file_format=array_record --data_dir=DIR` and pass "
          f"data_dir=DIR.") from e

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    example = self._source[index]
    image = np.asarray(example["image"], np.uint8)
    return {"image": image, "label": np.int32(example["label"])}


@functools.lru_cache(maxsize=4)
def _fashion_mnist_arrays(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  # Cached: decompressing the training images takes ~1 s.
  prefix = {"train": "train", "test": "t10k"}[split]
  images = idx.read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"))
  labels = idx.read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))
  return images[..., None], labels


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  digits = sk_datasets.load_digits()
  # Values are counts 0..16 of set pixels in 4x4 cells; scale to the uint8 range of the others.
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  return images, digits.target


def _check_split(name: str, split: str, allow_slicing: bool) -> None:
  base = split.split("[", 1)[0] if allow_slicing else split
  splits = dataset_info(name).splits
  if base not in splits:
    sliced = " (tfds slicing such as 'train[:90%]' allowed)" if allow_slicing else ""
    raise ValueError(f"split: unknown split {split!r} for {name!r}; allowed: {list(splits)}"
                     f"{sliced}")


def open_source(name: str, split: str, data_dir: str | None = None) -> Sequence[dict]:
  """Returns the random-access source of `split` of dataset `name`.

  Args:
    name: a key of `DATASETS`.
    split: a split name of the dataset (tfds datasets also accept tfds slicing syntax).
    data_dir: tfds prepared-data directory (None: tfds default); for fashion_mnist the
      directory of the IDX files (None: the Debian package's).

  Returns:
    A sequence of {"image": uint8 [H, W, C], "label": int32 []}.
  """
  dataset_info(name)
  if name in _TFDS_NAMES:
    _check_split(name, split, allow_slicing=True)
    return TfdsSource(name, split, data_dir)
  _check_split(name, split, allow_slicing=False)
  if name == "fashion_mnist":
    return ArraySource(*_fashion_mnist_arrays(data_dir or FASHION_MNIST_DIR, split))
  images, labels = _digits_arrays()
  num_test = len(images) // 5
  if split == "train":
    return ArraySource(images[:-num_test], labels[:-num_test])
  return ArraySource(images[-num_test:], labels[-num_test:])
