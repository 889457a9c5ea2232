"""Rotary position embeddings for vision and vision-language models, in plain jax.numpy.

Every function is pure; learnable quantities (mixed frequencies, LieRE generators, learned
spherical frequencies) are arguments, never state. Conventions (API.md): `x` is
`[..., L, H, D]`, positions `[..., L, P]` float32, image positions `(row, col)`, multimodal
`(t, h, w)`; `layout="half"` pairs channel `j` with `j + D/2`, `"interleaved"` `2j` with `2j+1`.

  import rope
  pos = rope.grid_positions(14, 14)                          # [196, 2] (row, col)
  ang = rope.angles(pos, rope.freqs_axial(64, theta=100.))   # [196, 1, 32]
  q = rope.apply(q, ang, layout="interleaved")               # q: [B, 196, H, 64]
"""
from rope.augment import augment_positions
from rope.augment import perturb_positions
from rope.augment import sample_comrope_perturbation
from rope.augment import sample_position_augment
from rope.augment import with_prefix
from rope.biases import fire_bias
from rope.biases import lookhere_bias
from rope.blocks import apply_blocks
from rope.blocks import init_liere
from rope.blocks import liere_generators
from rope.blocks import liere_rotations
from rope.blocks import spherical_freqs
from rope.blocks import spherical_rotations
from rope.comrope import comrope_generators
from rope.comrope import init_comrope
from rope.comrope import skew_rotations
from rope.diagnostics import ptd
from rope.diagnostics import relative_logit_gap
from rope.frequencies import freqs_1d
from rope.frequencies import freqs_axial
from rope.frequencies import freqs_cyclic
from rope.frequencies import freqs_hope
from rope.frequencies import freqs_mmrope
from rope.frequencies import freqs_mrope
from rope.frequencies import freqs_mrope_interleaved
from rope.frequencies import freqs_multi_head
from rope.frequencies import freqs_videorope
from rope.frequencies import init_mixed_freqs
from rope.frequencies import inv_freq
from rope.grape import grape_plane_freqs
from rope.grape import grape_rotate
from rope.grape import init_grape
from rope.multimodal import age_schedule
from rope.multimodal import circle_offsets
from rope.multimodal import Image
from rope.multimodal import multimodal_positions
from rope.multimodal import SCHEMES
from rope.multimodal import Text
from rope.multimodal import Video
from rope.positions import grid_axes
from rope.positions import grid_positions
from rope.scaling import attention_scale
from rope.scaling import scale_freqs
from rope.scaling import truncate_freqs
from rope.rotary import angles
from rope.rotary import apply
from rope.rotary import apply_cos_sin
from rope.rotary import grid_cos_sin
from rope.rotary import partial_rotary_dim
from rope.spherical import apply_spherical
from rope.spherical import spherical_cos_sin
from rope.spherical import spherical_grid_cos_sin
from rope.string import apply_dense
from rope.string import cayley
from rope.string import circulant_basis
from rope.string import circulant_string
from rope.string import string_cayley
from rope.vision_freqs import dinov3_periods
from rope.vision_freqs import freqs_dinov3
from rope.vision_freqs import freqs_eva

__version__ = "0.1.0"
