"""Matmuls of the models: float32, or bfloat16 with CPU-only mixed-precision kernels.

The plain formulation is the reference and the default on every platform: with
`dtype=bfloat16` it is what Flax's `nn.Dense` / `nn.Einsum` / `nn.Conv` compute (bf16 operands,
bf16 result), which TPU and GPU run at full speed. Only when lowering for CPU
(`jax.lax.platform_dependent(cpu=...)`) do the bf16 ops take the kernels of this module:

* XLA:CPU reaches its fast bf16 dot kernels (AMX / AVX-512-BF16) only for bf16 x bf16 -> f32
  dots, and autodiff of a `preferred_element_type=float32` dot runs the backward dots on
  float32 cotangents. `_bf16_einsum` (a `jax.custom_vjp`) makes all three dots of a layer
  (forward, both gradients) bf16 x bf16 -> f32, then rounds the result to bf16: the usual
  mixed-precision recipe (bf16 compute, float32 parameters and accumulation, float32
  gradients of float32 parameters).
* a bias gradient as a dot with ones, a bf16 unstack whose gradient is one stack, and the patch
  embedding as a matmul: the bf16 forms XLA:CPU otherwise lowers to slow loops.

Measured speed-ups are in benchmarks/RESULTS.md. float32 is the plain op on every platform.

The modules keep Flax's parameter names and shapes (`kernel`, `bias`) on both paths, so
float32 and bfloat16 models share checkpoints, and every parameter is created with its logical
axis names (`axes`, `nn.with_logical_partitioning`; the vocabulary: models/vit.py
`LOGICAL_AXES`), so a mesh can shard them whichever path runs.
"""
import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _parse(spec: str) -> tuple[str, str, str]:
  """"ab,bc->ac" -> ("ab", "bc", "ac"); ValueError unless every operand index has a partner."""
  inputs, arrow, out = spec.replace(" ", "").partition("->")
  lhs, comma, rhs = inputs.partition(",")
  if not arrow or not comma or "." in spec or "," in rhs:
    raise ValueError(f"einsum spec={spec!r}: need an explicit two-operand 'lhs,rhs->out' "
                     f"without ellipsis.")
  for name, own, others in (("lhs", lhs, rhs + out), ("rhs", rhs, lhs + out)):
    lonely = [c for c in own if c not in others]
    if lonely:  # Its gradient would need a broadcast, not an einsum.
      raise ValueError(f"einsum spec={spec!r}: {name} index {lonely} appears nowhere else.")
  return lhs, rhs, out


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bf16_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  return _bf16_fwd(spec, a, b)[0]


def _mm(spec, a, b):
  return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                    preferred_element_type=jnp.float32)


def _bf16_fwd(spec, a, b):
  return _mm(spec, a, b).astype(jnp.bfloat16), (a, b)


def _bf16_bwd(spec, residuals, g):
  a, b = residuals
  lhs, rhs, out = _parse(spec)
  da = _mm(f"{out},{rhs}->{lhs}", g, b).astype(a.dtype)
  db = _mm(f"{lhs},{out}->{rhs}", a, g).astype(b.dtype)
  return da, db


_bf16_einsum.defvjp(_bf16_fwd, _bf16_bwd)


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """`jnp.einsum(spec, a, b)` computed in `dtype`.

  Args:
    spec: explicit two-operand spec such as "bld,dkhe->kbhle" (every index of an operand
      appears in the other operand or the output).
    a, b: operands of any float dtype.
    dtype: float32 (plain einsum of float32 operands) or bfloat16 (bf16 operands and result;
      on CPU bf16 x bf16 -> float32 accumulation -> bf16, and the same for both gradients,
      which come back in the operands' own dtypes).

  Returns:
    The product in `dtype`.
  """
  _parse(spec)
  if jnp.dtype(dtype) == jnp.bfloat16:
    return jax.lax.platform_dependent(
        a, b, cpu=functools.partial(_bf16_einsum, spec),
        default=lambda a, b: jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)))
  if jnp.dtype(dtype) != jnp.float32:
    raise ValueError(f"dtype={jnp.dtype(dtype)}; allowed: float32, bfloat16.")
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype))


def _sum_by_dot(g: jax.Array, spec: str, out_dtype) -> jax.Array:
  """`jnp.einsum(spec, g)` for a spec that only sums axes away ("kbhle->khe"), as a dot with a
  ones array: XLA:CPU lowers a reduction over leading axes to a slow reduce-window, while a
  matrix-vector product runs in the dot library at memory speed. (`rope._broadcast.sum_to_shape`
  is the same workaround for rope's float32 VJPs; this one takes bf16 with f32 accumulation.)"""
  src, _, dst = spec.partition("->")
  summed = "".join(c for c in src if c not in dst)
  ones = jnp.ones(tuple(g.shape[src.index(c)] for c in summed), g.dtype)
  return jnp.einsum(f"{src},{summed}->{dst}", g, ones,
                    preferred_element_type=jnp.float32).astype(out_dtype)


def _broadcast_add(y, bias, spec):
  src, _, dst = spec.partition("->")
  broadcast = tuple(y.shape[i] if c in dst else 1 for i, c in enumerate(src))
  return y + bias.reshape(broadcast).astype(y.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _add_bias_bf16(y, bias, spec):
  return _broadcast_add(y, bias, spec)


def _add_bias_fwd(y, bias, spec):
  return _broadcast_add(y, bias, spec), bias   # a live parameter: saving it costs nothing


def _add_bias_bwd(spec, bias, g):
  return g, _sum_by_dot(g, spec, bias.dtype)


_add_bias_bf16.defvjp(_add_bias_fwd, _add_bias_bwd)


def add_bias(y: jax.Array, bias: jax.Array, spec: str) -> jax.Array:
  """`y + bias` broadcast by `spec` ("kbhle->khe": bias axes k, h, e of y), in y's dtype.

  On CPU, for a bfloat16 `y`, the bias gradient is computed by `_sum_by_dot` (XLA:CPU lowers
  the bf16 sum to a slow reduce-window); elsewhere, and for float32, Flax's plain add."""
  if y.dtype == jnp.bfloat16:
    return jax.lax.platform_dependent(
        y, bias, cpu=lambda y, bias: _add_bias_bf16(y, bias, spec),
        default=lambda y, bias: _broadcast_add(y, bias, spec))
  return _broadcast_add(y, bias, spec)


@jax.custom_vjp
def _unstack_bf16(x):
  return tuple(x[i] for i in range(x.shape[0]))


def _unstack_fwd(x):
  return _unstack_bf16(x), None


def _unstack_bwd(_, gs):
  return (jnp.stack(gs),)


_unstack_bf16.defvjp(_unstack_fwd, _unstack_bwd)


def unstack(x: jax.Array) -> tuple[jax.Array, ...]:
  """`tuple(x[i] for i in range(x.shape[0]))`; for bfloat16 `x` its gradient is one stack.

  Differentiating plain indexing gives a sum of zero-padded cotangents, which XLA:CPU fuses
  into one slow loop in bf16; a stack is a copy. Only on CPU; float32 and other platforms keep
  plain indexing."""
  plain = lambda x: tuple(x[i] for i in range(x.shape[0]))
  if x.dtype == jnp.bfloat16:
    return jax.lax.platform_dependent(x, cpu=_unstack_bf16, default=plain)
  return plain(x)


def _boxed(init: Callable, axes: Optional[Sequence[Optional[str]]]) -> Callable:
  """`init` whose value carries logical axis names (None: a plain, unnamed parameter)."""
  return init if axes is None else nn.with_logical_partitioning(init, tuple(axes))


class Einsum(nn.Module):
  """`einsum(spec, x, kernel) + bias`: Flax `nn.Einsum` with this module's mixed precision.

  Attributes:
    shape: kernel shape.
    spec: einsum spec "x,kernel->out"; the bias has the kernel's axes that reach the output.
    use_bias: add a zero-initialised bias.
    kernel_init: kernel initializer.
    reorder: a function applied to the stored kernel and bias before use (a fixed
      re-indexing of output channels that keeps the parameters in the reference layout, e.g.
      `models.vit.to_strided`).
    axes: logical axis names of the kernel (the bias takes those of its axes); None: unnamed.
    bias_mask: None, or one 0 / 1 per index of the bias's first axis: the bias is multiplied
      by it, so masked entries are zero and get no gradient (DINOv3's qkv `bias_mask`, EVA-02's
      missing k bias: `(1, 0, 1)` over the q / k / v stack).
    dtype: compute dtype (parameters are float32).
  """
  shape: Sequence[int]
  spec: str
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  reorder: Optional[Callable] = None
  bias_mask: Optional[tuple[float, ...]] = None
  axes: Optional[Sequence[Optional[str]]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _, rhs, out = _parse(self.spec)
    reorder = self.reorder or (lambda a: a)
    kernel = self.param("kernel", _boxed(self.kernel_init, self.axes), tuple(self.shape),
                        jnp.float32)
    y = einsum(self.spec, x, reorder(kernel), self.dtype)
    if not self.use_bias:
      return y
    kept = "".join(c for c in out if c in rhs)
    bias_axes = None if self.axes is None else [self.axes[rhs.index(c)] for c in kept]
    bias = self.param("bias", _boxed(nn.initializers.zeros, bias_axes),
                      tuple(self.shape[rhs.index(c)] for c in kept), jnp.float32)
    if self.bias_mask is not None:
      mask = jnp.asarray(self.bias_mask, jnp.float32)
      bias = bias * mask.reshape(mask.shape + (1,) * (bias.ndim - 1))
    return add_bias(y, reorder(bias), f"{out}->{kept}")


class Dense(nn.Module):
  """Flax `nn.Dense` (`kernel [in, out]`, `bias [out]`) with this module's mixed precision.

  `axes`: logical names of the kernel's (in, out) axes; the bias takes `out`'s."""
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  axes: Optional[Sequence[Optional[str]]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x `[..., in]` -> `[..., features]`."""
    lead = x.shape[:-1]
    kernel = self.param("kernel", _boxed(self.kernel_init, self.axes),
                        (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", _boxed(nn.initializers.zeros, self.axes and self.axes[-1:]),
                      (self.features,), jnp.float32)
    y = einsum("mi,io->mo", x.reshape(-1, x.shape[-1]), kernel, self.dtype)
    return add_bias(y, bias, "mo->o").reshape(lead + (self.features,))


def _patch_matmul(images, kernel, bias):
  """The bf16 patch embedding on CPU: patchify, then one `_bf16_einsum` (XLA:CPU has no fast
  bf16 convolution)."""
  b, h, w, c = images.shape
  p = kernel.shape[0]
  patches = images.reshape(b, h // p, p, w // p, p, c)
  y = _bf16_einsum("bhpwqc,pqco->bhwo", patches, kernel)
  return _add_bias_bf16(y, bias, "bhwo->o")


def _patch_conv(images, kernel, bias, dtype):
  """Flax's `nn.Conv(width, (p, p), strides=p, padding="VALID")` in `dtype`."""
  p = kernel.shape[0]
  y = jax.lax.conv_general_dilated(images.astype(dtype), kernel.astype(dtype), (p, p), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + bias.astype(dtype)


class PatchEmbed(nn.Module):
  """Non-overlapping patch embedding: Flax `nn.Conv(width, (p, p), strides=p, "VALID")` (same
  `kernel [p, p, C, width]`, `bias [width]`).

  A strided convolution with kernel = stride is a reshape and a matmul; on CPU bfloat16 runs it
  so (`_patch_matmul`); everywhere else, and in float32, it is the convolution.
  `axes`: logical names of the kernel's 4 axes; the bias takes the last.
  """
  width: int
  patch_size: int
  axes: Optional[Sequence[Optional[str]]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images `[B, H, W, C]` (H, W divisible by p) -> `[B, H/p, W/p, width]`."""
    c = images.shape[-1]
    p = self.patch_size
    kernel = self.param("kernel", _boxed(nn.initializers.lecun_normal(), self.axes),
                        (p, p, c, self.width), jnp.float32)
    bias = self.param("bias", _boxed(nn.initializers.zeros, self.axes and self.axes[-1:]),
                      (self.width,), jnp.float32)
    if jnp.dtype(self.dtype) == jnp.float32:   # Flax's nn.Conv, exactly.
      return _patch_conv(images, kernel, bias, jnp.float32)
    return jax.lax.platform_dependent(
        images, kernel, bias, cpu=_patch_matmul,
        default=functools.partial(_patch_conv, dtype=self.dtype))


def _attention_cpu(q, k, v, bias, scale):
  """`jax.nn.dot_product_attention`'s math, heads first, for XLA:CPU.

  Heads go first before the dots (`[B, H, L, D]`, batch axes leading), so both dots batch over
  (B, H) without the transposes XLA:CPU places around tokens-first batch dots (attention
  forward + backward of a ViT-S/16 layer, float32: benchmarks/RESULTS.md). In bfloat16 the
  dots are this module's bf16 x bf16 -> f32 ones (`_bf16_einsum`), whose thunk also rejects
  some of the batch-dot forms that tokens-first operands lower to ("Unsupported element type
  for DotThunk")."""
  q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
  if q.dtype == jnp.bfloat16:
    dot = _bf16_einsum
  else:
    dot = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)
  logits = dot("bhqd,bhkd->bhqk", q * jnp.asarray(scale, q.dtype), k)
  logits = logits.astype(jnp.float32)
  if bias is not None:
    logits = logits + bias
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.swapaxes(dot("bhqk,bhkd->bhqd", probs, v), 1, 2)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          bias: Optional[jax.Array] = None, *, scale: float,
                          implementation: str = "xla") -> jax.Array:
  """`jax.nn.dot_product_attention(q, k, v, bias, scale=, implementation=)`.

  Args:
    q: `[B, Q, H, D]`; k, v: `[B, L, H, D]`, all of one dtype (float32 or bfloat16).
    bias: None or a float32 logit bias broadcastable to `[B, H, Q, L]`.
    scale: logit scale (1/sqrt(D)).
    implementation: "xla" (every platform) or "cudnn" (GPU, bfloat16).

  Returns:
    `[B, Q, H, D]` in q's dtype. Lowered for CPU, the same math runs heads first
  (`_attention_cpu`, with this module's bf16 x bf16 -> f32 dots in bfloat16); everything else
  is jax's function, so TPU / GPU reach their fused attention kernels.
  """
  def plain(q, k, v, bias):
    return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale,
                                        implementation=implementation)
  if implementation != "xla":
    return plain(q, k, v, bias)
  return jax.lax.platform_dependent(q, k, v, bias,
                                    cpu=functools.partial(_attention_cpu, scale=scale),
                                    default=plain)
