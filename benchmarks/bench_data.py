"""Input-pipeline throughput (images/s) against the number of grain worker processes.

  python -m benchmarks.bench_data                                   # synthetic JPEGs, 0,1,2,4
  python -m benchmarks.bench_data --workers 0,8,16,32 --batches 50  # on a TPU / GPU host
  python -m benchmarks.bench_data --dataset imagenet2012 --data_dir DIR --workers 0,16,32

What is timed: `data.vision.make_train_iterator` exactly as training builds it (the recipe's
decode, crop, flip, 3-Augment, colour jitter, normalisation, batching, targets), with
`data.worker_processes` = each value of `--workers` (0: everything in this process) and
`data.num_workers` = `--threads` threads in each process. For every worker count a fresh
iterator is started and `--warmup` batches are taken untimed (process start-up, imports, the
first batches); then `--batches` batches are timed. Reported: images/s, images/s per worker
(per process doing the work: the main process when 0), and the start-up time.

Data: `--dataset synthetic` (default; no download) is `--num_images` random images of
ImageNet's typical size (500 x 375, both orientations), smooth content plus noise, stored as
JPEG (quality 90) and decoded with PIL in the source's `[i]`, as the tfds ImageNet source
decodes its JPEGs; `--dataset imagenet2012` (or any data.vision dataset) reads the prepared
tfds data under `--data_dir`. Real ImageNet JPEGs vary in size and content: measure on them,
on the host that will train, before sizing a run (README "Input workers").
"""
import argparse
import io
import os
import time

import numpy as np
from PIL import Image

from data import vision


class SyntheticJpegSource:
  """`num_images` JPEG-encoded random images, decoded on access: {"image": uint8 [H, W, 3],
  "label": int32}. Module-level (picklable) so that worker processes can read it."""

  def __init__(self, num_images: int, num_classes: int = 1000, seed: int = 0,
               size: tuple[int, int] = (375, 500)):
    rng = np.random.default_rng(seed)
    self._jpegs, self._labels = [], rng.integers(0, num_classes, num_images).astype(np.int32)
    for i in range(num_images):
      h, w = size if i % 2 == 0 else size[::-1]
      # Smooth structure (upsampled coarse noise) plus fine noise: JPEG sizes and decode
      # times near those of photographs rather than of flat or pure-noise images.
      coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
      smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), np.int16)
      pixels = np.clip(smooth + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
      buffer = io.BytesIO()
      Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
      self._jpegs.append(buffer.getvalue())

  def __len__(self) -> int:
    return len(self._jpegs)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    image = np.asarray(Image.open(io.BytesIO(self._jpegs[index])).convert("RGB"), np.uint8)
    return {"image": image, "label": self._labels[index]}


def measure(config, source, *, batch_size: int, batches: int, warmup: int) -> dict[str, float]:
  """{"images_per_sec", "startup_sec"} of one iterator built from `config`."""
  t0 = time.perf_counter()
  it = vision.make_train_iterator(config, global_batch_size=batch_size, seed=0, source=source)
  for _ in range(warmup):
    next(it)
  startup = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  elapsed = time.perf_counter() - t0
  if hasattr(it, "close"):
    it.close()
  return {"images_per_sec": batches * batch_size / elapsed, "startup_sec": startup}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--workers", default="0,1,2,4",
                      help="comma-separated worker process counts (0: in this process)")
  parser.add_argument("--threads", type=int, default=2,
                      help="data.num_workers: threads in each process (config default 2)")
  parser.add_argument("--dataset", default="synthetic",
                      help="synthetic, or a data.vision dataset name (e.g. imagenet2012)")
  parser.add_argument("--data_dir", default=None, help="tfds prepared-data directory")
  parser.add_argument("--recipe", default="spherical_imagenet",
                      help=f"augmentation recipe, one of {sorted(vision.RECIPES)}")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=64, help="images per batch")
  parser.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
  parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
  parser.add_argument("--num_images", type=int, default=256, help="synthetic: distinct images")
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(",")]
  if any(w < 0 for w in workers):
    raise SystemExit(f"--workers={args.workers}: counts must be >= 0.")

  config = vision.default_config(args.recipe)
  name = "imagenet2012" if args.dataset == "synthetic" else args.dataset
  config.update(dict(name=name, image_size=args.image_size, data_dir=args.data_dir,
                     num_workers=args.threads, prefetch=2))
  source = SyntheticJpegSource(args.num_images) if args.dataset == "synthetic" else None

  from benchmarks import common  # pylint: disable=g-import-not-at-top  (imports jax)
  print(common.header())
  print(f"dataset {args.dataset} | recipe {args.recipe} | {args.image_size} px | batch "
        f"{args.batch_size} | {args.batches} timed batches | {args.threads} thread(s) per "
        f"process | os.cpu_count() {os.cpu_count()}")
  print(f"{'workers':>8} {'images/s':>10} {'per worker':>11} {'start-up s':>11}")
  for w in workers:
    config.worker_processes = w
    r = measure(config, source, batch_size=args.batch_size, batches=args.batches,
                warmup=args.warmup)
    print(f"{w:>8d} {r['images_per_sec']:>10.1f} {r['images_per_sec'] / max(w, 1):>11.1f} "
          f"{r['startup_sec']:>11.1f}", flush=True)


if __name__ == "__main__":  # Required: worker processes are spawned and import this module.
  main()
