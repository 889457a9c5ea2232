"""models.matmul: the mixed-precision einsum, its bias / unstack gradients, the Flax modules."""
import re

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from models import matmul


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)


def _dots(fn, *args):
  """(lhs dtype, rhs dtype, preferred/out dtype) of every dot_general in fn's jaxpr."""
  out = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "dot_general":
        out.append((eqn.invars[0].aval.dtype, eqn.invars[1].aval.dtype,
                    eqn.outvars[0].aval.dtype))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return out


SPECS = [("mi,io->mo", (6, 5), (5, 7)),
         ("bld,dkhe->kbhle", (2, 3, 4), (4, 3, 2, 5)),
         ("bhqd,bhkd->bhqk", (2, 3, 4, 5), (2, 3, 6, 5))]


@pytest.mark.parametrize("spec, sa, sb", SPECS)
def test_float32_is_plain_einsum(spec, sa, sb):
  a, b = _normal(0, sa), _normal(1, sb)
  np.testing.assert_array_equal(matmul.einsum(spec, a, b), jnp.einsum(spec, a, b))


@pytest.mark.parametrize("spec, sa, sb", SPECS)
def test_bfloat16_value_and_gradients_match_float32(spec, sa, sb):
  a, b = _normal(0, sa), _normal(1, sb)
  w = _normal(2, jnp.einsum(spec, a, b).shape)
  loss = lambda dtype: lambda a, b: jnp.sum(matmul.einsum(spec, a, b, dtype).astype(
      jnp.float32) * w)
  y = matmul.einsum(spec, a, b, jnp.bfloat16)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), jnp.einsum(spec, a, b), rtol=0.02, atol=0.05)
  got = jax.grad(loss(jnp.bfloat16), argnums=(0, 1))(a, b)
  want = jax.grad(loss(jnp.float32), argnums=(0, 1))(a, b)
  for g, r in zip(got, want):
    assert g.dtype == jnp.float32                       # gradients in the operands' dtype
    np.testing.assert_allclose(g, r, rtol=0.03, atol=0.03 * float(jnp.abs(r).max()))


def _lowered_dots(fn, args, platforms):
  """(lhs, rhs, out) element types of every dot_general in fn lowered for `platforms`."""
  if platforms == ("cpu",):
    text = jax.jit(fn).lower(*args).as_text()
  else:
    text = jax.export.export(jax.jit(fn), platforms=platforms)(*args).mlir_module()
  sig = re.compile(r"stablehlo\.dot_general.*:\s*\(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)"
                   r"\s*->\s*tensor<[^>]*x(\w+)>")
  return [m.groups() for m in map(sig.search, text.splitlines()) if m]


def _bf16_grad():
  return jax.grad(lambda a, b: jnp.sum(matmul.einsum("mi,io->mo", a, b, jnp.bfloat16)
                                       .astype(jnp.float32) ** 2), argnums=(0, 1))


def test_bfloat16_backward_dots_take_bf16_and_accumulate_in_float32_on_cpu():
  # The point of the CPU kernels: every dot of the gradient too is bf16 x bf16 -> f32 (autodiff
  # of a preferred_element_type=f32 dot would run the backward dots on float32 cotangents).
  a, b = _normal(0, (6, 5)), _normal(1, (5, 7))
  dots = _lowered_dots(_bf16_grad(), (a, b), ("cpu",))
  assert dots == [("bf16", "bf16", "f32")] * 3, dots


def test_accelerators_get_the_plain_bf16_dots():
  # Lowered for TPU / GPU the CPU kernels are gone: Flax's plain bf16 einsum and its autodiff.
  a, b = _normal(0, (6, 5)), _normal(1, (5, 7))
  dots = _lowered_dots(_bf16_grad(), (a, b), ("tpu",))
  assert len(dots) == 3 and all(d == ("bf16", "bf16", "bf16") for d in dots), dots


def test_modules_carry_logical_axis_names():
  x = _normal(0, (2, 3, 8))
  boxed = matmul.Einsum((8, 3, 2, 4), "bld,dkhe->kbhle", axes=("embed", "qkv", "heads", "kv"))
  variables = boxed.init(jax.random.PRNGKey(0), x)
  specs = nn.get_partition_spec(variables)["params"]
  assert tuple(specs["kernel"]) == ("embed", "qkv", "heads", "kv")
  assert tuple(specs["bias"]) == ("qkv", "heads", "kv")
  dense = matmul.Dense(5, axes=("embed", "mlp")).init(jax.random.PRNGKey(0), x)["params"]
  assert dense["kernel"].names == ("embed", "mlp") and dense["bias"].names == ("mlp",)
  # apply takes boxed and unboxed parameters alike.
  np.testing.assert_array_equal(boxed.apply(variables, x), boxed.apply(nn.unbox(variables), x))


def test_bad_spec_and_dtype_raise_naming_the_argument():
  a, b = _normal(0, (2, 3)), _normal(1, (3, 4))
  with pytest.raises(ValueError, match="spec="):
    matmul.einsum("ij,jk", a, b)                    # implicit output
  with pytest.raises(ValueError, match="lhs index"):
    matmul.einsum("ij,jk->k", a, b)                 # i summed alone: not an einsum gradient
  with pytest.raises(ValueError, match="dtype="):
    matmul.einsum("ij,jk->ik", a, b, jnp.float16)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_add_bias_gradient_is_the_broadcast_sum(dtype):
  y, bias = _normal(0, (3, 4, 2, 5, 6)).astype(dtype), _normal(1, (3, 2, 6))
  w = _normal(2, y.shape)
  f = lambda y, bias: jnp.sum(matmul.add_bias(y, bias, "kbhle->khe").astype(jnp.float32) * w)
  ref = lambda y, bias: jnp.sum((y.astype(jnp.float32) + bias[:, None, :, None, :]) * w)
  tol = 1e-5 if dtype == jnp.float32 else 0.05
  np.testing.assert_allclose(f(y, bias), ref(y, bias), rtol=tol, atol=tol)
  got, want = jax.grad(f, 1)(y, bias), jax.grad(ref, 1)(y, bias)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_unstack_gradient_equals_indexing(dtype):
  x = _normal(0, (3, 2, 5)).astype(dtype)
  w = _normal(1, (3, 2, 5)).astype(dtype)
  f = lambda x: sum(jnp.sum(part * w[i] * (i + 1)) for i, part in enumerate(matmul.unstack(x)))
  ref = lambda x: sum(jnp.sum(x[i] * w[i] * (i + 1)) for i in range(3))
  np.testing.assert_array_equal(jax.grad(f)(x), jax.grad(ref)(x))


def test_patch_embed_equals_strided_conv_with_the_same_parameters():
  images = _normal(0, (2, 12, 8, 3))
  conv = nn.Conv(16, (4, 4), strides=(4, 4), padding="VALID")
  params = conv.init(jax.random.PRNGKey(1), images)
  mine = matmul.PatchEmbed(16, 4)
  assert jax.tree.map(jnp.shape, mine.init(jax.random.PRNGKey(1), images)) == \
      jax.tree.map(jnp.shape, params)
  want = conv.apply(params, images)
  np.testing.assert_allclose(mine.apply(params, images), want, rtol=1e-5, atol=1e-5)
  as_matmul = matmul.PatchEmbed(16, 4, dtype=jnp.bfloat16).apply(params, images)
  np.testing.assert_allclose(as_matmul.astype(jnp.float32), want, rtol=0.02, atol=0.05)


def test_dense_and_einsum_modules_match_flax():
  x = _normal(0, (2, 3, 8))
  flax_dense = nn.Dense(5)
  params = flax_dense.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(matmul.Dense(5).apply(params, x), flax_dense.apply(params, x),
                             rtol=1e-6, atol=1e-6)
  flax_einsum = nn.Einsum((8, 3, 2, 4), "bld,dkhe->kbhle")
  params = flax_einsum.init(jax.random.PRNGKey(2), x)
  params = jax.tree.map(lambda p: p + _normal(3, p.shape), params)   # non-zero bias too
  mine = matmul.Einsum((8, 3, 2, 4), "bld,dkhe->kbhle")
  np.testing.assert_allclose(mine.apply(params, x), flax_einsum.apply(params, x),
                             rtol=1e-6, atol=1e-6)


def test_dot_product_attention_cpu_heads_first_matches_jax():
  """On CPU the attention runs heads first (`_attention_cpu`); float32 equals jax's function to
  rounding (values and gradients), bfloat16 to bf16 rounding; without a bias too."""
  q, k, v = _normal(0, (2, 3, 4, 8)), _normal(1, (2, 5, 4, 8)), _normal(2, (2, 5, 4, 8))
  bias = _normal(3, (1, 4, 3, 5))
  want = jax.nn.dot_product_attention(q, k, v, bias=bias, scale=0.3)
  np.testing.assert_allclose(matmul.dot_product_attention(q, k, v, bias, scale=0.3), want,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(matmul.dot_product_attention(q, k, v, None, scale=0.3),
                             jax.nn.dot_product_attention(q, k, v, scale=0.3),
                             rtol=1e-5, atol=1e-6)
  def loss(f):
    return jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2, 3))
  mine = loss(lambda *a: matmul.dot_product_attention(*a, scale=0.3))(q, k, v, bias)
  ref = loss(lambda q, k, v, b: jax.nn.dot_product_attention(q, k, v, bias=b, scale=0.3))(
      q, k, v, bias)
  for a, b in zip(mine, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  got = jax.jit(lambda *a: matmul.dot_product_attention(*a, scale=0.3))(
      q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), bias)
  assert got.dtype == jnp.bfloat16 and got.shape == want.shape
  np.testing.assert_allclose(got.astype(jnp.float32), want, atol=0.05, rtol=0.05)
