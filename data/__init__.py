"""Input pipelines.

Image classification: `data.vision` (datasets, seeded/resumable/sharded iterators), built from
`data.vision_sources` (where the examples come from), `data.idx` (IDX file format),
`data.augment` and `data.randaugment` (per-image augmentations) and `data.mixup` (per-batch
Mixup/CutMix and label targets).

Vision-language data (spatial QA samples, tokenizer): `data.spatial_qa`, `data.tokenizer`.
"""
