"""Tests of the image-classification input pipeline (data.vision and its modules).

Real data: Fashion-MNIST IDX files of the Debian package and scikit-learn digits; tfds
datasets through `tfds.testing.mock_data` (no downloads here). Most pipeline tests use digits
(8x8, 1438 train / 359 test images) to stay fast.
"""
import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import augment
from data import idx
from data import mixup
from data import randaugment
from data import vision
from data import vision_sources

FMNIST = vision_sources.FASHION_MNIST_DIR


def _config(recipe="none", **overrides):
  c = vision.default_config(recipe)
  c.update(dict(name="digits", image_size=8, num_workers=0, prefetch=0))
  c.update(overrides)
  return c


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _normalised_source(name, split):
  src = vision_sources.open_source(name, split)
  info = vision.dataset_info(name)
  images = np.stack([augment.normalize(src[i]["image"], info.mean, info.std)
                     for i in range(len(src))])
  labels = np.array([src[i]["label"] for i in range(len(src))])
  return images, labels


# --- IDX / sources. ----------------------------------------------------------------------


def test_idx_header_matches_fashion_mnist_files():
  # Independent header read (struct) against the parser's shapes.
  expected = {"train": 60000, "t10k": 10000}
  for prefix, n in expected.items():
    with gzip.open(os.path.join(FMNIST, f"{prefix}-images-idx3-ubyte.gz")) as f:
      assert struct.unpack(">IIII", f.read(16)) == (0x803, n, 28, 28)
    with gzip.open(os.path.join(FMNIST, f"{prefix}-labels-idx1-ubyte.gz")) as f:
      assert struct.unpack(">II", f.read(8)) == (0x801, n)
    labels = idx.read_idx(os.path.join(FMNIST, f"{prefix}-labels-idx1-ubyte.gz"))
    assert labels.shape == (n,) and labels.dtype == np.uint8
    # Fashion-MNIST is balanced; the first image of both splits is an ankle boot (9).
    np.testing.assert_array_equal(np.bincount(labels), [n // 10] * 10)
    assert labels[0] == 9
  src = vision_sources.open_source("fashion_mnist", "train")
  assert len(src) == 60000 and src[0]["image"].shape == (28, 28, 1)
  assert src[0]["image"].dtype == np.uint8 and src[0]["label"] == 9
  assert len(vision_sources.open_source("fashion_mnist", "test")) == 10000


def test_parse_idx_roundtrip_and_errors():
  values = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
  data = bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 3, 4) + values.astype(">i2").tobytes()
  parsed = idx.parse_idx(data)
  np.testing.assert_array_equal(parsed, values)
  assert parsed.dtype == np.int16
  with pytest.raises(ValueError, match="not an IDX file"):
    idx.parse_idx(b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00")
  with pytest.raises(ValueError, match="bytes"):
    idx.parse_idx(data[:-1])


@pytest.mark.parametrize("name", ["fashion_mnist", "digits"])
def test_dataset_info_counts_and_statistics(name):
  info = vision.dataset_info(name)
  images, labels = _normalised_source(name, "train")
  assert (len(images), len(vision_sources.open_source(name, "test"))) == (info.num_train,
                                                                          info.num_eval)
  assert images.shape[-1] == info.channels == 1
  assert labels.min() == 0 and labels.max() == info.num_classes - 1
  # The stored mean/std normalise the training data to ~zero mean, unit variance.
  assert abs(images.mean()) < 1e-3 and abs(images.std() - 1) < 1e-3


def test_digits_split_is_last_fifth():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  test = vision_sources.open_source("digits", "test")
  assert len(test) == 359
  np.testing.assert_array_equal(test[0]["image"][..., 0],
                                np.round(digits.images[1797 - 359] * 255 / 16))
  assert test[358]["label"] == digits.target[-1]


# --- Per-image augmentations. -------------------------------------------------------------


def test_resize_center_crop_closed_form():
  image = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
  # Shorter side already 8: no resize, central 8 columns.
  np.testing.assert_array_equal(augment.resize_shorter_center_crop(image, 8), image[:, 2:10])
  # crop_fraction 1/2: shorter side to 8 (no resize), central 4 x 4.
  np.testing.assert_array_equal(augment.resize_shorter_center_crop(image, 4, 0.5),
                                image[2:6, 4:8])
  # Upscaling a constant image keeps it constant; shape follows the request.
  flat = np.full((5, 7, 1), 77, np.uint8)
  out = augment.resize_shorter_center_crop(flat, 20)
  assert out.shape == (20, 20, 1) and (out == 77).all()


def test_crops_and_flip():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
  padded = np.pad(image, ((3, 3), (3, 3), (0, 0)))
  windows = {padded[t:t + 10, l:l + 10].tobytes() for t in range(7) for l in range(7)}
  for _ in range(20):
    assert augment.pad_random_crop(image, rng, 3).tobytes() in windows
  flips = {augment.random_horizontal_flip(image, rng).tobytes() for _ in range(20)}
  assert flips == {image.tobytes(), image[:, ::-1].tobytes()}
  # RRC covering the full square image at the same size is the identity.
  np.testing.assert_array_equal(
      augment.random_resized_crop(image, rng, 10, (1.0, 1.0), (1.0, 1.0)), image)
  assert augment.random_resized_crop(image, rng, 24).shape == (24, 24, 3)


def test_three_augment_and_color_jitter():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
  gray = augment.grayscale(image)
  luma = (image.astype(np.int64) @ np.array([299, 587, 114])) / 1000
  assert np.abs(gray[..., 0] - luma).max() <= 1 and (gray == gray[..., :1]).all()
  np.testing.assert_array_equal(augment.solarize(image),
                                np.where(image >= 128, 255 - image, image))
  seen = set()
  for _ in range(30):
    out = augment.three_augment(image, rng)
    seen.add("gray" if np.array_equal(out, gray) else
             "solarize" if np.array_equal(out, augment.solarize(image)) else "blur")
  assert seen == {"gray", "solarize", "blur"}
  # Grayscale images stay single-channel and grayscale is their identity.
  single = image[..., :1]
  np.testing.assert_array_equal(augment.grayscale(single), single)
  assert augment.three_augment(single, rng).shape == (12, 12, 1)
  # Strength 0 draws factors of exactly 1: identity; strength > 0 changes the image.
  np.testing.assert_array_equal(augment.color_jitter(image, rng, 0.0), image)
  assert not np.array_equal(augment.color_jitter(image, rng, 0.5), image)


def test_randaugment_table_and_ops():
  # torchvision's table at LieRE's magnitude 14 of 31 bins.
  table = randaugment._magnitudes(32, 32)  # pylint: disable=protected-access
  assert len(table) == 14
  assert table["shear_x"][0][14] == pytest.approx(0.3 * 14 / 30)
  assert table["rotate"][0][14] == pytest.approx(14.0)
  assert table["translate_x"][0][14] == pytest.approx(150 / 331 * 32 * 14 / 30)
  assert table["posterize"][0][14] == 6 and table["posterize"][0][0] == 8
  assert table["solarize"][0][14] == pytest.approx(255 - 8.5 * 14)
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  pil = augment.to_pil(image)
  np.testing.assert_array_equal(augment.from_pil(randaugment.apply_op(pil, "rotate", 90.0)),
                                np.rot90(image))
  shifted = augment.from_pil(randaugment.apply_op(pil, "translate_x", 2.0))
  np.testing.assert_array_equal(shifted[:, :-2], image[:, 2:])
  assert (shifted[:, -2:] == 0).all()
  for op in randaugment.OPS:
    out = augment.from_pil(randaugment.apply_op(augment.to_pil(image[..., :1]), op, 3.0))
    assert out.shape == (16, 16, 1) and out.dtype == np.uint8
  a = randaugment.rand_augment(image, np.random.default_rng(5), 2, 14)
  np.testing.assert_array_equal(a, randaugment.rand_augment(image, np.random.default_rng(5),
                                                            2, 14))
  with pytest.raises(ValueError, match="magnitude"):
    randaugment.rand_augment(image, rng, 2, 31)


# --- Mixup / CutMix. ----------------------------------------------------------------------


def test_one_hot_targets_smoothing():
  t = mixup.one_hot_targets(np.array([2, 0]), 4, smoothing=0.2)
  np.testing.assert_allclose(t, [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]])


def test_mix_pairs_sums_and_closed_form():
  rng = np.random.default_rng(3)
  images = rng.normal(size=(8, 6, 6, 1)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
  targets = mixup.one_hot_targets(labels, 8)
  for mix, cut in ((0.8, 0.0), (0.0, 1.0)):
    out, t = mixup.mix_pairs(images, targets, np.arange(4), seed=9, mixup_alpha=mix,
                             cutmix_alpha=cut)
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-6)
    for a in range(8):
      b = a ^ 1  # partner row
      lam = t[a, labels[a]]
      assert t[a, labels[b]] == pytest.approx(1 - lam) and t[b, labels[b]] == pytest.approx(lam)
      if cut == 0:
        np.testing.assert_allclose(out[a], lam * images[a] + (1 - lam) * images[b], atol=1e-6)
      else:  # Every pixel is its own or the partner's; the own fraction is lam.
        own = out[a] == images[a]
        assert np.all(own | (out[a] == images[b]))
        assert own.mean() == pytest.approx(lam)
  unchanged, t = mixup.mix_pairs(images, targets, np.arange(4), seed=9, mixup_alpha=0.8,
                                 cutmix_alpha=1.0, prob=0.0)
  np.testing.assert_array_equal(unchanged, images)
  np.testing.assert_array_equal(t, targets)


def test_train_mixup_targets_and_images():
  # Same seed with and without Mixup: per-image augmentation is identical, so the mixed batch
  # is an exact blend of the unmixed one.
  plain = _config("spherical_cifar100", mixup=0.0, cutmix=0.0, image_size=8)
  mixed = _config("spherical_cifar100", cutmix=0.0, image_size=8)
  p = next(vision.make_train_iterator(plain, global_batch_size=16, seed=4))
  m = next(vision.make_train_iterator(mixed, global_batch_size=16, seed=4))
  np.testing.assert_allclose(m["label"].sum(-1), 1.0, rtol=1e-6)
  for a in range(16):
    b = a ^ 1
    la, lb = p["label"][a].argmax(), p["label"][b].argmax()
    if la == lb:  # lam is not visible in the targets; a pair's blend preserves its sum.
      np.testing.assert_allclose(m["image"][a] + m["image"][b], p["image"][a] + p["image"][b],
                                 atol=1e-5)
      continue
    lam = m["label"][a, la]
    np.testing.assert_allclose(m["image"][a], lam * p["image"][a] + (1 - lam) * p["image"][b],
                               atol=1e-5)
  cut = next(vision.make_train_iterator(_config("spherical_cifar100", image_size=8),
                                        global_batch_size=16, seed=4))
  np.testing.assert_allclose(cut["label"].sum(-1), 1.0, rtol=1e-6)
  assert (cut["label"] > 0).sum(-1).max() == 2  # two classes at most per row


# --- Training iterator: determinism, resume, epochs, sharding. ----------------------------


def test_train_batch_format():
  c = _config("spherical_cifar100", image_size=16, label_smoothing=0.1)
  batch = next(vision.make_train_iterator(c, global_batch_size=6, seed=0))
  assert batch.keys() == {"image", "label"}
  assert batch["image"].shape == (6, 16, 16, 1) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (6, 10) and batch["label"].dtype == np.float32
  np.testing.assert_allclose(batch["label"].sum(-1), 1.0, rtol=1e-6)


def test_train_determinism_and_seed():
  c = _config("spherical_cifar100")
  a = _take(vision.make_train_iterator(c, global_batch_size=8, seed=1), 3)
  b = _take(vision.make_train_iterator(c, global_batch_size=8, seed=1), 3)
  _assert_batches_equal(a, b)
  d = next(vision.make_train_iterator(c, global_batch_size=8, seed=2))
  assert not np.array_equal(a[0]["image"], d["image"])
  # Threads and prefetching change nothing.
  threaded = _config("spherical_cifar100", num_workers=2, prefetch=3)
  _assert_batches_equal(a, _take(vision.make_train_iterator(threaded, global_batch_size=8,
                                                            seed=1), 3))


def test_worker_processes_change_nothing():
  # grain worker processes (2) against the calling process (0): the same batches, from a
  # resumed step too; every random stage is on (crop, flip, 3-Augment, jitter, Mixup/CutMix).
  c = _config("spherical_cifar100", max_train_examples=20, max_eval_examples=20)
  workers = _config("spherical_cifar100", max_train_examples=20, max_eval_examples=20,
                    worker_processes=2)
  # Resumed at step 1 (a mid-epoch position): 6 batches cross two epoch boundaries.
  reference = _take(vision.make_train_iterator(c, global_batch_size=8, seed=5, start_step=1), 6)
  it = vision.make_train_iterator(workers, global_batch_size=8, seed=5, start_step=1)
  _assert_batches_equal(reference, _take(it, 6))
  it.close()  # stops the worker processes now rather than at garbage collection
  evals = vision.make_eval_iterator(workers, batch_size=8, image_size=12)
  _assert_batches_equal(list(vision.make_eval_iterator(c, batch_size=8, image_size=12)),
                        list(evals))


def test_train_resume_mid_epoch_and_across_epochs():
  # 20 examples, batch 8: epoch 0 = positions 0..19, so step 2 is mid-epoch and straddles
  # the epoch boundary.
  c = _config("spherical_cifar100", max_train_examples=20)
  fresh = _take(vision.make_train_iterator(c, global_batch_size=8, seed=3), 7)
  for k in (1, 2, 5):
    resumed = _take(vision.make_train_iterator(c, global_batch_size=8, seed=3, start_step=k),
                    7 - k)
    _assert_batches_equal(fresh[k:], resumed)


def test_train_epochs_are_permutations():
  # Without augmentation at native size, every output image is a normalised source image.
  n = 24
  c = _config("none", max_train_examples=n)
  images, labels = _normalised_source("digits", "train")
  lookup = {images[i].tobytes(): i for i in range(n)}
  batches = _take(vision.make_train_iterator(c, global_batch_size=8, seed=0), 6)
  stream = np.concatenate([b["image"] for b in batches])
  targets = np.concatenate([b["label"] for b in batches])
  order = [lookup[x.tobytes()] for x in stream]
  np.testing.assert_array_equal(targets.argmax(-1), labels[order])
  first, second = order[:n], order[n:]
  assert sorted(first) == sorted(second) == list(range(n))
  assert first != second and first != list(range(n))


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_make_the_global_batch(process_count):
  c = _config("spherical_cifar100")
  single = _take(vision.make_train_iterator(c, global_batch_size=8, seed=5, start_step=2), 2)
  shards = [_take(vision.make_train_iterator(c, global_batch_size=8, seed=5, start_step=2,
                                             process_index=p, process_count=process_count), 2)
            for p in range(process_count)]
  for step in range(2):
    for key in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([shards[p][step][key] for p in range(process_count)]),
          single[step][key])
    assert shards[0][step]["image"].shape[0] == 8 // process_count


# --- Evaluation iterator. ------------------------------------------------------------------


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_example_once(process_count):
  c = _config("spherical_cifar100")  # augmentation options must not affect eval
  images, labels = _normalised_source("digits", "test")
  per_process = [list(vision.make_eval_iterator(c, batch_size=100, image_size=8,
                                                process_index=p, process_count=process_count))
                 for p in range(process_count)]
  assert all(len(batches) == 4 for batches in per_process)  # ceil(359 / 100)
  got = {"image": [], "label": [], "mask": []}
  for step in range(4):
    for p in range(process_count):
      batch = per_process[p][step]
      assert batch["image"].shape == (100 // process_count, 8, 8, 1)
      assert batch["label"].dtype == np.int32 and batch["mask"].dtype == np.bool_
      for k in got:
        got[k].append(batch[k])
  got = {k: np.concatenate(v) for k, v in got.items()}
  np.testing.assert_array_equal(got["mask"], np.arange(400) < 359)
  np.testing.assert_array_equal(got["label"][:359], labels)
  np.testing.assert_array_equal(got["image"][:359], images)
  assert (got["image"][359:] == 0).all() and (got["label"][359:] == 0).all()


def test_eval_resolution_and_reiterable():
  c = _config(max_eval_examples=10)
  ev = vision.make_eval_iterator(c, batch_size=4, image_size=20)
  first, second = list(ev), list(ev)
  assert len(ev) == len(first) == 3
  _assert_batches_equal(first, second)
  assert first[0]["image"].shape == (4, 20, 20, 1)
  assert first[-1]["mask"].tolist() == [True, True, False, False]
  src = vision_sources.open_source("digits", "test")
  info = vision.dataset_info("digits")
  expected = augment.normalize(augment.resize_shorter_center_crop(src[5]["image"], 20),
                               info.mean, info.std)
  np.testing.assert_array_equal(first[1]["image"][1], expected)


def test_eval_canvas_keeps_the_object_size_at_a_seeded_offset():
  c = _config(max_eval_examples=6, eval_protocol="canvas")
  src = vision_sources.open_source("digits", "test")
  info = vision.dataset_info("digits")
  (batch,) = list(vision.make_eval_iterator(c, batch_size=6, image_size=14))
  assert batch["image"].shape == (6, 14, 14, 1)
  blank = augment.normalize(np.zeros((1, 1, 1), np.uint8), info.mean, info.std)[0, 0, 0]
  offsets = []
  for i in range(6):
    top, left = vision.canvas_offset(i, 14, 8)
    assert 0 <= top <= 6 and 0 <= left <= 6
    offsets.append((top, left))
    want = np.full((14, 14, 1), blank, np.float32)      # a blank (zero-pixel) canvas ...
    want[top:top + 8, left:left + 8] = augment.normalize(  # ... with the 8 px test image
        augment.resize_shorter_center_crop(src[i]["image"], 8), info.mean, info.std)
    np.testing.assert_array_equal(batch["image"][i], want)
  assert len(set(offsets)) > 1                           # random per example ...
  again = list(vision.make_eval_iterator(c, batch_size=2, image_size=14))   # ... and fixed
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in again]), batch["image"])
  # At the training size the canvas is the image: the same as "resize".
  same = [list(vision.make_eval_iterator(_config(max_eval_examples=6, eval_protocol=p),
                                         batch_size=6, image_size=8))[0]["image"]
          for p in ("canvas", "resize")]
  np.testing.assert_array_equal(*same)
  with pytest.raises(ValueError, match=r"image_size.*eval_protocol='canvas'.*>= the training"):
    vision.make_eval_iterator(c, batch_size=6, image_size=6)
  with pytest.raises(ValueError, match=r"eval_protocol.*'resize', 'canvas'"):
    vision.make_eval_iterator(_config(eval_protocol="pad"), batch_size=6, image_size=8)


# --- tfds path (mock data; no downloads). ---------------------------------------------------


@pytest.mark.parametrize("data_dir", ["empty", "default"])
def test_unprepared_tfds_dataset_is_one_clear_error(data_dir, tmp_path, monkeypatch):
  # An empty data_dir, and tfds' default one (found without generated splits here: a KeyError
  # inside tfds): both name the dataset and the command that prepares it.
  if data_dir == "empty":
    directory = str(tmp_path)
  else:
    directory = None
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"No prepared 'cifar10' .*tfds build cifar10"):
    vision_sources.open_source("cifar10", "train", directory)


@pytest.mark.parametrize("name,split", [("cifar10", "test"), ("imagenet2012", "validation")])
def test_tfds_data_source_on_mock_data(name, split):
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    reference = tfds.data_source(name, split=split, download=False)
    ref_labels = [int(reference[i]["label"]) for i in range(len(reference))]
    c = _config("spherical_imagenet", name=name, image_size=16, data_dir="/tmp/mock_tfds",
                num_workers=2, prefetch=2)
    batches = _take(vision.make_train_iterator(c, global_batch_size=4, seed=0), 3)
    info = vision.dataset_info(name)
    assert batches[0]["image"].shape == (4, 16, 16, 3)
    assert batches[0]["label"].shape == (4, info.num_classes)
    # 12 positions over 10 examples: epoch 0 sees every mock example once.
    seen = np.concatenate([b["label"].argmax(-1) for b in batches])
    assert sorted(seen[:10].tolist()) == sorted(ref_labels)
    evals = list(vision.make_eval_iterator(c, batch_size=4, image_size=24))
    assert evals[0]["image"].shape == (4, 24, 24, 3)
    labels = np.concatenate([b["label"][b["mask"]] for b in evals])
    np.testing.assert_array_equal(labels, ref_labels)


# --- Errors. --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,match", [
    (dict(name="mnist"), "name"),
    (dict(crop="center"), "crop"),
    (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
    (dict(randaugment_magnitude=40), "randaugment_magnitude"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(mix_prob=1.5), "mix_prob"),
    (dict(eval_crop_fraction=0.0), "eval_crop_fraction"),
    (dict(max_train_examples=0), "max_train_examples"),
    (dict(train_split="validation"), "split"),
])
def test_bad_options_raise(overrides, match):
  c = dict(_config().to_dict(), **overrides)
  with pytest.raises(ValueError, match=match):
    vision.make_train_iterator(c, global_batch_size=8, seed=0)


def test_bad_arguments_raise():
  c = _config()
  with pytest.raises(ValueError, match="mnist.*allowed.*cifar10"):
    vision.dataset_info("mnist")
  with pytest.raises(ValueError, match="unknown options.*colour_jitter"):
    vision.validate_config(dict(c.to_dict(), colour_jitter=0.3))
  with pytest.raises(ValueError, match="recipe"):
    vision.default_config("deit")
  with pytest.raises(ValueError, match="global_batch_size"):
    vision.make_train_iterator(c, global_batch_size=6, seed=0, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    vision.make_train_iterator(c, global_batch_size=8, seed=0, process_index=2,
                               process_count=2)
  with pytest.raises(ValueError, match="seed"):
    vision.make_train_iterator(c, global_batch_size=8, seed=-1)
  with pytest.raises(ValueError, match="even"):  # Mixup pairs: 6 / 2 = 3 rows per process.
    vision.make_train_iterator(_config("spherical_cifar100"), global_batch_size=6, seed=0,
                               process_count=2)
  with pytest.raises(ValueError, match="batch_size"):
    vision.make_eval_iterator(c, batch_size=5, image_size=8, process_count=2)
  with pytest.raises(ValueError, match="split"):
    vision.make_eval_iterator(c, batch_size=4, image_size=8, split="validation")


def test_public_names_of_data_vision():
  # Other modules (tasks/classification.py) use these names through data.vision.
  assert vision.dataset_info("cifar100") == vision.DatasetInfo(
      100, 3, "train", "test", 50_000, 10_000, (0.5071, 0.4865, 0.4409),
      (0.2673, 0.2564, 0.2762), 32, ("train", "test"))
  assert len(vision.open_source("digits", "train")) == vision.dataset_info("digits").num_train
  ev = vision.make_eval_iterator(_config(), batch_size=64, image_size=8)
  assert isinstance(ev, vision.EvalIterable) and len(ev) == 6  # ceil(359 / 64)
