"""Flax (linen) models.

* `models.vit`: the ViT classifier (variants Ti/S/B, patch size, cls or average pooling) with
  one registered position encoding; `models.vit_encodings`: the registry of the encodings
  themselves (absolute embeddings and the RoPE family, all rotary math from the `rope` package).
"""
