"""Input pipelines.

Image classification: `data.vision` (datasets, seeded/resumable/sharded iterators), built from
`data.vision_sources` (where the examples come from), `data.idx` (IDX file format),
`data.augment` and `data.randaugment` (per-image augmentations) and `data.mixup` (per-batch
Mixup/CutMix and label targets).

Vision-language data: `data.spatial_scenes` (synthetic spatial QA scenes, questions, samples),
`data.vlm_pipeline` (config, batches with position ids, iterators), `data.vlm_tfds` (a tfds
image-question-answer dataset as samples) and `data.tokenizer`.
"""
