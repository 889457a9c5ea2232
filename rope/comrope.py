"""ComRoPE (AP and LD): commuting learned block generators, and `skew_rotations`.

Every head applies `R(x) = expm(sum_a x_a A_a)` with block-diagonal skew generators built from
one raw `b x b` matrix per head and block, `S = P - P^T` (the full difference, unlike LieRE's
triangle). Within a block the generators of different axes are multiples of the same `S` (LD)
or live on different blocks (AP), so they commute and `R(x)^T R(y) = R(y - x)`: the encoding is
exactly relative. Reference: `Longin-Yu/ComRoPE` `model.py`; spec docs/spec/vision_ext.md §1.
"""
import jax
import jax.numpy as jnp

from rope import _checks
from rope import _expm

_HIGHEST = jax.lax.Precision.HIGHEST
VARIANTS = ("ap", "ld")


def init_comrope(key: jax.Array, num_heads: int, head_dim: int, *, variant: str = "ap",
                 block_size: int = 8, num_axes: int = 2, init_std: float = 1.0) -> dict:
  """ComRoPE parameters of one layer, drawn as the reference (`torch.randn * init_std`).

  Args:
    key: PRNG key.
    num_heads: H.
    head_dim: D; AP needs `D / A` divisible by `block_size` (blocks cycle through the axes),
      LD needs `D` divisible by it.
    variant: `"ap"` (axis-partitioned) or `"ld"` (linearly dependent).
    block_size: b >= 2 (the reference config's default is 2; its paper values are not in the
      repository).
    num_axes: A (2 for images).
    init_std: standard deviation of `P`.

  Returns:
    `{"P": [H, D/b, b, b] ~ N(0, init_std^2)}`, plus `"theta": [A, D/b] ~ N(0, 1)` for LD
    (one multiplier per axis and block, shared by the heads, as the code; §8.1 of the spec).
  """
  _checks.one_of("variant", variant, VARIANTS)
  num_heads = _checks.positive_int("num_heads", num_heads)
  head_dim = _checks.positive_int("head_dim", head_dim)
  block_size = _checks.positive_int("block_size", block_size)
  num_axes = _checks.positive_int("num_axes", num_axes)
  if block_size < 2:
    raise ValueError(f"`block_size`={block_size} must be >= 2 (a rotation needs a plane).")
  if variant == "ap":
    _checks.divisible("head_dim", head_dim, block_size * num_axes,
                      f"ComRoPE-AP cycles blocks of block_size={block_size} channels through "
                      f"num_axes={num_axes} axes, so head_dim/num_axes must be a multiple of "
                      f"block_size")
  else:
    _checks.divisible("head_dim", head_dim, block_size,
                      f"ComRoPE-LD splits each head into blocks of block_size={block_size} "
                      f"channels")
  g = head_dim // block_size
  k_p, k_t = jax.random.split(key)
  params = {"P": init_std * jax.random.normal(k_p, (num_heads, g, block_size, block_size),
                                              jnp.float32)}
  if variant == "ld":
    params["theta"] = jax.random.normal(k_t, (num_axes, g), jnp.float32)
  return params


def comrope_generators(params: dict, *, variant: str, num_axes: int = 2) -> jax.Array:
  """ComRoPE skew generators `[A, H, D/b, b, b]` from `init_comrope`'s parameters.

  `S_{h,g} = P_{h,g} - P_{h,g}^T`; AP: `G_a` is `S` on the blocks `g` with `g % A == a`
  (alternating: with two axes block 0 reads row, block 1 col, ...) and 0 elsewhere; LD:
  `G_a = theta[a, g] * S_{h,g}`.

  Args:
    params: `{"P": [H, G, b, b]}` (+ `"theta": [A, G]` for LD).
    variant: `"ap"` or `"ld"`.
    num_axes: A (AP; LD reads it from `theta`, and it must agree).

  Returns:
    float32 `[A, H, G, b, b]`, for `skew_rotations`.
  """
  _checks.one_of("variant", variant, VARIANTS)
  num_axes = _checks.positive_int("num_axes", num_axes)
  if not isinstance(params, dict) or "P" not in params:
    raise ValueError(f"`params` must be a dict with 'P' [H, D/b, b, b] (and 'theta' for LD), "
                     f"got {type(params).__name__} with keys "
                     f"{sorted(params) if isinstance(params, dict) else None}.")
  p = jnp.asarray(params["P"]).astype(jnp.float32)
  _checks.square_blocks("params['P']", p.shape, 4, "[H, D/b, b, b]")
  s = p - jnp.swapaxes(p, -1, -2)                                   # [H, G, b, b]
  g = p.shape[1]
  if variant == "ap":
    _checks.divisible("params['P'].shape[1] (blocks)", g, num_axes,
                      f"ComRoPE-AP cycles the blocks through num_axes={num_axes} axes")
    onehot = (jnp.arange(g)[None, :] % num_axes) == jnp.arange(num_axes)[:, None]   # [A, G]
    return jnp.where(onehot[:, None, :, None, None], s[None], 0.0)
  if "theta" not in params:
    raise ValueError("`params` needs 'theta' [A, D/b] for variant='ld'.")
  theta = jnp.asarray(params["theta"]).astype(jnp.float32)
  if theta.shape != (num_axes, g):
    raise ValueError(f"`params['theta']` must be [A, D/b] = [{num_axes}, {g}] (num_axes, blocks "
                     f"of params['P'] {p.shape}), got {theta.shape}.")
  return theta[:, None, :, None, None] * s[None]


def skew_rotations(positions: jax.Array, generators: jax.Array) -> jax.Array:
  """`expm(sum_a positions[..., a] * G_a)` per token, head and block.

  The general form of LieRE / ComRoPE / block STRING: `liere_rotations(pos, W)` is
  `skew_rotations(pos, liere_generators(W))`. The exponential is the scaled-and-squared Taylor
  series of `rope/_expm.py` (plain float32 `jax.scipy.linalg.expm` misses ComRoPE's 4x4
  blocks by 1.2e-4). Apply the result with `apply_blocks`.

  Args:
    positions: `[..., L, A]`.
    generators: `[A, H|1, D/b, b, b]`, skew-symmetric (then the result is orthogonal).

  Returns:
    float32 `[..., L, H|1, D/b, b, b]`; the identity at position 0.
  """
  positions = jnp.asarray(positions)
  gens = jnp.asarray(generators)
  _checks.square_blocks("generators", gens.shape, 5, "[A, H, D/b, b, b]")
  _checks.block_positions(positions.shape, "generators", gens.shape)
  gens = gens.astype(jnp.float32)
  pos = positions.astype(jnp.float32)
  # A matmul over the A axes at HIGHEST precision (float32-exact on every backend): its
  # gradient w.r.t. the generators is another matmul, where a broadcast multiply + sum would
  # differentiate into XLA:CPU's slow reduction over the token axis.
  gen = jnp.matmul(pos, gens.reshape(gens.shape[0], -1), precision=_HIGHEST)
  return _expm.expm(gen.reshape(pos.shape[:-1] + gens.shape[1:]))
