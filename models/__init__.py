"""Flax (linen) models.

* `models.vit`: the ViT classifier (variants Ti/S/B, patch size, cls or average pooling) with
  one configurable position encoding; `models.vit_posenc`: the encodings themselves (absolute
  embeddings and the RoPE family, all rotary math from the `rope` package).
"""
