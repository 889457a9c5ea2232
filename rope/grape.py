"""GRAPE (Group Representational Position Encoding) with learned rank-2 planes.

Multiplicative GRAPE turns a query / key in rank-2 planes spanned by unit vectors `(a_p, b_p)`
by a phase that grows with the position. With the canonical coordinate planes this is RoPE;
the reference code (Multimodal-RoPEs, `GRAPEEmbedding.apply_qk`) learns the planes instead and
normalises each plane on its own, so in general the planes of a bank are not mutually orthogonal
and the map is neither a rotation nor relative: it cannot be written as a cos/sin table and
costs O(P * D) per token (docs/spec/multimodal_ext.md §4). The canonical (commuting) GRAPE
tables are `freqs_mrope` / `freqs_cyclic` with `inv_freq(..., log_scale=)`'s warp.

Modes (parameters are arguments, raw and unnormalised, as the reference's `nn.Parameter`s):
  `"axis"`: three banks `{"t": (a, b), "h": (a, b), "w": (a, b)}`, each `[P, W]`; bank t turns
    plane p by `t * f_p`, then bank h by `h * f_p`, then bank w by `w * f_p`.
  `"mixed"`: `{"a": [P, W], "b": [P, W], "axis_weight": [P, 3]}`; plane p turns by
    `(w_p / |w_p|) . (t, h, w) * f_p`.
  `"block_mixed"`: the same keys with shapes `[W/B, ppb, B]` and `[W/B, ppb, 3]`: `mixed`
    inside each block of B contiguous channels.
`W` is the rotated width (the model's rotary dim, usually the head dim); channels beyond it pass
through unchanged.

Rope-init shortcut: with `init_grape(..., rope_init=True)` planes, `mixed` and `block_mixed`
equal `apply(x, angles(positions, freqs), layout="interleaved")` with
`freqs[p] = plane_freqs[p] * onehot(p % 3)`, and `axis` the same with `freqs[p] =
plane_freqs[p] * (1, 1, 1)`; use that cheaper path when the planes are frozen at that init.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks
from rope import _kernels
from rope import frequencies

GRAPE_MODES = ("axis", "mixed", "block_mixed")
_BANKS = ("t", "h", "w")
_EPS = 1e-12            # torch.nn.functional.normalize's eps
_HI = jax.lax.Precision.HIGHEST


def _sizes(head_dim, mode, num_planes, block_size, planes_per_block):
  """Validated `(P,)` for axis / mixed or `(W/B, ppb, B)` for block_mixed."""
  _checks.one_of("mode", mode, GRAPE_MODES)
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 2, "channels rotate in pairs")
  if mode != "block_mixed":
    p = head_dim // 2 if num_planes is None else _checks.positive_int("num_planes", num_planes)
    if p > head_dim // 2:
      raise ValueError(f"`num_planes`={p} cannot exceed head_dim/2 = {head_dim // 2}.")
    return (p,)
  b = _checks.positive_int("block_size", block_size)
  if head_dim % b:
    raise ValueError(f"`head_dim`={head_dim} must be divisible by `block_size`={b} (planes act "
                     f"inside blocks of block_size contiguous channels).")
  ppb = (b // 2 if planes_per_block is None
         else _checks.positive_int("planes_per_block", planes_per_block))
  if not 1 <= ppb <= b // 2:
    raise ValueError(f"`planes_per_block`={ppb} must be in [1, block_size/2 = {b // 2}] "
                     f"(block_size={b}).")
  return (head_dim // b, ppb, b)


def _sub_sample(values: np.ndarray, n: int) -> np.ndarray:
  """The reference's `values[round(linspace(0, len - 1, n))]` (round half to even, as torch)."""
  if values.shape[-1] == n:
    return values
  idx = np.round(np.linspace(0, values.shape[-1] - 1, n, dtype=np.float32)).astype(np.int64)
  return values[..., idx]


def grape_plane_freqs(head_dim: int, theta: float, mode: str, *,
                      num_planes: Optional[int] = None, block_size: int = 16,
                      planes_per_block: Optional[int] = None,
                      log_scale: float = 1.0) -> jax.Array:
  """Per-plane frequencies of learned GRAPE, from the model's 1-D ladder `theta ** (-2j/W)`.

  When fewer planes than pairs are asked for, plane p takes `inv_freq[round(linspace(0, W/2 - 1,
  P))[p]]` (block mode: the same inside each block's slice of the ladder); `log_scale` then
  warps as `inv_freq(..., log_scale=)` (docs/spec/multimodal_ext.md §4).

  Args:
    head_dim: W, the rotated width (the model's rotary dim, usually the head dim), even.
    theta: the base ("rope_theta" of the text config).
    mode: `"axis"`, `"mixed"` or `"block_mixed"`.
    num_planes: P for axis / mixed (default W/2).
    block_size: B for block_mixed (default 16); W must be divisible by it.
    planes_per_block: ppb for block_mixed (default B/2), at most B/2.
    log_scale: GRAPE's `log_freq_scale` (1. = none).

  Returns:
    float32 `[P]` (axis: one array shared by the t, h and w banks; mixed) or `[W/B, ppb]`
    (block_mixed).
  """
  sizes = _sizes(head_dim, mode, num_planes, block_size, planes_per_block)
  inv = frequencies._inv_freq_np(head_dim, theta)                     # [W/2]
  if mode != "block_mixed":
    out = _sub_sample(inv, sizes[0])
  else:
    nb, ppb, _ = sizes
    if inv.shape[0] % nb == 0:
      out = _sub_sample(inv.reshape(nb, -1), ppb)
    else:                                                              # odd block sizes
      out = _sub_sample(inv, nb * ppb).reshape(nb, ppb)
  return jnp.asarray(frequencies._log_warp_np(np.ascontiguousarray(out), log_scale))


def init_grape(key: jax.Array, head_dim: int, mode: str, *, num_planes: Optional[int] = None,
               block_size: int = 16, planes_per_block: Optional[int] = None,
               rope_init: bool = True) -> dict:
  """Raw learned-GRAPE parameters of one attention layer (shared by all heads).

  Args:
    key: PRNG key (unused, may be None, when `rope_init=True`).
    head_dim: W, the rotated width (the model's rotary dim, usually the head dim), even.
    mode: `"axis"`, `"mixed"` or `"block_mixed"`.
    num_planes, block_size, planes_per_block: as `grape_plane_freqs`.
    rope_init: True (the reference's default): plane p has `a = e_{2p}`, `b = e_{2p+1}` (block
      mode: inside its block) and `axis_weight` one-hot on axis `p % 3` (block mode: on the
      flattened plane index) -- interleaved RoPE; False: every entry `N(0, 0.02**2)`.

  Returns:
    `axis`: `{"t": (a, b), "h": (a, b), "w": (a, b)}`, each `[P, W]`;
    `mixed`: `{"a": [P, W], "b": [P, W], "axis_weight": [P, 3]}`;
    `block_mixed`: `{"a": [W/B, ppb, B], "b": [W/B, ppb, B], "axis_weight": [W/B, ppb, 3]}`.
    All float32.
  """
  sizes = _sizes(head_dim, mode, num_planes, block_size, planes_per_block)
  if mode == "block_mixed":
    nb, ppb, b = sizes
    plane_shape, width, weight_shape = (nb, ppb, b), b, (nb, ppb, 3)
  else:
    plane_shape, width, weight_shape = (sizes[0], head_dim), head_dim, (sizes[0], 3)
  n_planes = plane_shape[-2]

  def planes(k):
    if not rope_init:
      ka, kb = jax.random.split(k)
      return (0.02 * jax.random.normal(ka, plane_shape, jnp.float32),
              0.02 * jax.random.normal(kb, plane_shape, jnp.float32))
    pair = (2 * np.arange(n_planes)) % width
    a = np.zeros(plane_shape, np.float32)
    b_ = np.zeros(plane_shape, np.float32)
    a[..., np.arange(n_planes), pair] = 1.0
    b_[..., np.arange(n_planes), (pair + 1) % width] = 1.0
    return jnp.asarray(a), jnp.asarray(b_)

  if mode == "axis":
    keys = jax.random.split(key, 3) if not rope_init else (None,) * 3
    return {name: planes(k) for name, k in zip(_BANKS, keys)}
  kp, kw = jax.random.split(key) if not rope_init else (None, None)
  a, b_ = planes(kp)
  if rope_init:
    flat = np.zeros((int(np.prod(weight_shape[:-1])), 3), np.float32)
    flat[np.arange(flat.shape[0]), np.arange(flat.shape[0]) % 3] = 1.0
    weight = jnp.asarray(flat.reshape(weight_shape))
  else:
    weight = 0.02 * jax.random.normal(kw, weight_shape, jnp.float32)
  return {"a": a, "b": b_, "axis_weight": weight}


def _normalize(v):
  return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), _EPS)


def _planes(a, b, orthogonalize):
  """Unit `(a_hat, b_hat)` per plane: the reference's per-plane Gram-Schmidt, or (orthogonalize)
  Gram-Schmidt over all planes of the bank `a_0, b_0, a_1, b_1, ...` jointly (a QR)."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  if not orthogonalize:
    a_hat = _normalize(a)
    b_hat = _normalize(b - jnp.sum(b * a_hat, -1, keepdims=True) * a_hat)
    return a_hat, b_hat
  m = jnp.stack([a, b], -2)                                         # [..., P, 2, W]
  m = m.reshape(m.shape[:-3] + (-1, m.shape[-1]))                   # [..., 2P, W] a0 b0 a1 ...
  q, r = jnp.linalg.qr(jnp.swapaxes(m, -1, -2))                     # [..., W, 2P]
  sign = jnp.where(jnp.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
  q = jnp.swapaxes(q * sign[..., None, :], -1, -2)                  # [..., 2P, W] orthonormal
  return q[..., 0::2, :], q[..., 1::2, :]


def _plane_update(x, a, b, phase, block: bool):
  """`x + sum_p [(u cos - v sin - u) a_p + (u sin + v cos - v) b_p]` with `u = x.a_p`,
  `v = x.b_p` (all planes read the same x). x `[..., L, H, W]` (block: `[..., L, H, nb, B]`),
  a, b `[P, W]` (block: `[nb, P, B]`), phase `[..., L, 1, P]` (block: `[..., L, 1, nb, P]`).

  a and b are stacked on a new axis (`[2, P, W]`) so that the projection and the
  back-projection are one dot each, and u / v are whole slices of that axis rather than halves
  of the last one: the same FLOPs in two larger ops, and a backward pass without lane-splitting
  slices and concatenates (2x faster fwd+bwd on XLA:CPU at the VLM's shape, any backend)."""
  ab = jnp.stack([a, b], axis=0)                                  # [2, P, W] (block: [2, nb, P, B])
  if block:
    uv = jnp.einsum("...nd,knpd->...nkp", x, ab, precision=_HI)   # [..., nb, 2, P]
  else:
    # Plain 2-D dots on the rows of x ([N, W] x [W, 2P] and back): the einsums over the
    # leading dims lower to dots that XLA:CPU runs ~30% slower fwd+bwd (its weight gradients
    # contract several batch-like dims); reshapes of contiguous arrays are free everywhere.
    ab2 = ab.reshape(-1, ab.shape[-1])                              # [2P, W]
    uv = jnp.dot(x.reshape(-1, x.shape[-1]), ab2.T, precision=_HI)
    uv = uv.reshape(x.shape[:-1] + ab.shape[:2])                    # [..., 2, P]
  u, v = uv[..., 0, :], uv[..., 1, :]
  # The phase table is [..., L, 1, P], shared by the heads: on CPU its trig is vectorised and
  # computed once (`table=True`) instead of being fused into every head's update (2x fwd+bwd).
  c, s = _kernels.cos_sin(phase, table=True)
  duv = jnp.stack([u * (c - 1) - v * s, u * s + v * (c - 1)], axis=-2)
  if block:
    delta = jnp.einsum("...nkp,knpd->...nd", duv, ab, precision=_HI)
  else:
    delta = jnp.dot(duv.reshape(-1, ab2.shape[0]), ab2, precision=_HI)
    delta = delta.reshape(duv.shape[:-2] + x.shape[-1:])   # positions may broadcast x
  return x + delta


def _mixed_positions(positions, axis_weight):
  """`positions . normalize(axis_weight)` as a float32 multiply-add (no reduced-precision dot):
  positions `[..., L, 3]`, axis_weight `[..., 3]` -> `[..., L, ...]`."""
  w = _normalize(axis_weight.astype(jnp.float32))
  pos = positions.reshape(positions.shape[:-1] + (1,) * (w.ndim - 1) + (3,))
  return pos[..., 0] * w[..., 0] + pos[..., 1] * w[..., 1] + pos[..., 2] * w[..., 2]


def _shape(v):
  return tuple(jnp.shape(v))


def _check_params(params, plane_freqs, mode, x_shape):
  """Validated plane shapes; returns the rotated width W."""
  if not isinstance(params, dict):
    raise ValueError(f"`params` must be the dict of `init_grape` for mode={mode!r}, got "
                     f"{type(params).__name__}.")
  want = set(_BANKS) if mode == "axis" else {"a", "b", "axis_weight"}
  if set(params) != want:
    raise ValueError(f"`params` for mode={mode!r} must have keys {sorted(want)}, got "
                     f"{sorted(params)}.")
  pf = _shape(plane_freqs)
  if mode == "axis":
    for name in _BANKS:
      bank = params[name]
      if not (isinstance(bank, (tuple, list)) and len(bank) == 2):
        raise ValueError(f"`params[{name!r}]` must be a pair (a, b), got {type(bank).__name__}.")
      if len(_shape(bank[0])) != 2 or _shape(bank[0]) != _shape(bank[1]):
        raise ValueError(f"`params[{name!r}]` a, b must both be [P, W], got "
                         f"{_shape(bank[0])} and {_shape(bank[1])}.")
    shapes = {_shape(params[n][0]) for n in _BANKS}
    if len(shapes) != 1:
      raise ValueError(f"`params` banks t, h, w must have equal shapes, got {sorted(shapes)}.")
    p, w = shapes.pop()
    if pf != (p,):
      raise ValueError(f"`plane_freqs` must be [P] = [{p}] for these planes, got {pf}.")
  else:
    a, b, aw = _shape(params["a"]), _shape(params["b"]), _shape(params["axis_weight"])
    nd = 3 if mode == "block_mixed" else 2
    if len(a) != nd or a != b or aw != a[:-1] + (3,):
      raise ValueError(
          f"`params` for mode={mode!r} must be a, b {'[W/B, ppb, B]' if nd == 3 else '[P, W]'} "
          f"and axis_weight {'[W/B, ppb, 3]' if nd == 3 else '[P, 3]'}, got a {a}, b {b}, "
          f"axis_weight {aw}.")
    if pf != a[:-1]:
      raise ValueError(f"`plane_freqs` must have shape {a[:-1]} for these planes, got {pf}.")
    w = a[-1] * (a[0] if mode == "block_mixed" else 1)
  if w > x_shape[-1]:
    raise ValueError(f"the planes act on {w} channels but `x` has head_dim {x_shape[-1]}.")
  return w


def grape_rotate(x: jax.Array, positions: jax.Array, params: dict, plane_freqs: jax.Array, *,
                 mode: str, orthogonalize: bool = False) -> jax.Array:
  """Learned GRAPE applied to queries or keys (the reference's `apply_qk`).

  Each call normalises the raw planes as the reference does (`a_hat = a / |a|`, `b_hat` = `b`
  minus its `a_hat` component, normalised: per plane only), then applies, for every bank, the
  update `x + sum_p [(u cos phi_p - v sin phi_p - u) a_hat_p + (u sin phi_p + v cos phi_p - v)
  b_hat_p]` with `u = x . a_hat_p`, `v = x . b_hat_p` computed from the same `x` for all planes
  of the bank (docs/spec/multimodal_ext.md §4). `axis` applies banks t, h, w in that order.
  This is a rotation only when the planes of a bank are mutually orthogonal, which nothing
  enforces for learned planes; `orthogonalize=True` (not the reference) first makes all planes
  of each bank jointly orthonormal (Gram-Schmidt over `a_0, b_0, a_1, b_1, ...`), so the map
  preserves norms and, for `mixed` / `block_mixed`, depends on position differences only.

  Args:
    x: `[..., L, H, D]` queries or keys, any float dtype; `x[..., W:]` passes through.
    positions: `[..., L, 3]` (t, h, w), e.g. `multimodal_positions(..., "mrope")`; leading dims
      broadcast against `x`'s.
    params: `init_grape(..., mode)` (raw, possibly trained) parameters.
    plane_freqs: `grape_plane_freqs(..., mode)`: `[P]` or `[W/B, ppb]`.
    mode: `"axis"`, `"mixed"` or `"block_mixed"`.
    orthogonalize: see above (default False: the reference).

  Returns:
    `x` transformed, same shape and dtype (arithmetic in float32).
  """
  _checks.one_of("mode", mode, GRAPE_MODES)
  x = jnp.asarray(x)
  positions = jnp.asarray(positions)
  if x.ndim < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {tuple(x.shape)}.")
  if positions.ndim < 2 or positions.shape[-1] != 3 or positions.shape[-2] != x.shape[-3]:
    raise ValueError(f"`positions` must be [..., L, 3] = [..., {x.shape[-3]}, 3] (t, h, w) for "
                     f"`x` of shape {tuple(x.shape)}, got {tuple(positions.shape)}.")
  width = _check_params(params, plane_freqs, mode, x.shape)
  inv = jnp.asarray(plane_freqs, jnp.float32)
  pos = positions.astype(jnp.float32)
  xr = x[..., :width].astype(jnp.float32)
  if mode == "axis":
    for c, name in enumerate(_BANKS):
      a, b = _planes(jnp.asarray(params[name][0]), jnp.asarray(params[name][1]), orthogonalize)
      phase = (pos[..., c:c + 1] * inv)[..., None, :]                # [..., L, 1, P]
      xr = _plane_update(xr, a, b, phase, block=False)
  elif mode == "mixed":
    a, b = _planes(jnp.asarray(params["a"]), jnp.asarray(params["b"]), orthogonalize)
    phase = (_mixed_positions(pos, jnp.asarray(params["axis_weight"])) * inv)[..., None, :]
    xr = _plane_update(xr, a, b, phase, block=False)
  else:
    a, b = _planes(jnp.asarray(params["a"]), jnp.asarray(params["b"]), orthogonalize)
    nb, _, bs = a.shape
    mixed = _mixed_positions(pos, jnp.asarray(params["axis_weight"]))  # [..., L, nb, ppb]
    phase = (mixed * inv)[..., None, :, :]                             # [..., L, 1, nb, ppb]
    xb = xr.reshape(xr.shape[:-1] + (nb, bs))
    xr = _plane_update(xb, a, b, phase, block=True).reshape(xr.shape)
  out = xr.astype(x.dtype)
  if width == x.shape[-1]:
    return out
  return _kernels.concat_channels([out, x[..., width:]])
