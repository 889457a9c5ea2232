"""benchmarks/bench_data.py: its synthetic ImageNet-like source and one in-process measurement."""
import numpy as np

from benchmarks import bench_data
from data import vision


def test_synthetic_source_decodes_jpegs_and_feeds_the_pipeline():
  source = bench_data.SyntheticJpegSource(4, size=(30, 40))
  assert len(source) == 4
  first, second = source[0], source[1]
  assert first["image"].shape == (30, 40, 3) and second["image"].shape == (40, 30, 3)
  assert first["image"].dtype == np.uint8 and first["image"].std() > 10   # not a flat image
  config = vision.default_config("spherical_imagenet")
  config.update(dict(image_size=16, num_workers=0, prefetch=0))
  result = bench_data.measure(config, source, batch_size=4, batches=2, warmup=1)
  assert result["images_per_sec"] > 0 and result["startup_sec"] >= 0
  batch = next(vision.make_train_iterator(config, global_batch_size=4, seed=0, source=source))
  assert batch["image"].shape == (4, 16, 16, 3) and batch["label"].shape == (4, 1000)
