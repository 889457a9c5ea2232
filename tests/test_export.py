"""Every public rope function exports for accelerators; the TPU program is the plain one.

`jax.export` with `platforms=("tpu", "cuda")` lowers without those devices, so these run on
CPU. The CPU-only kernels (rope/_cpu.py) are selected by `jax.lax.platform_dependent`
(rope/_kernels.py) and must not appear in the accelerator modules: commuting rotations take
`stablehlo.cosine` / `stablehlo.sine` and contain no dot (the CPU fusion barrier is an identity
matmul), and every dot that remains (LieRE, block rotations) asks for HIGHEST precision: a
default-precision (bfloat16) pass on TPU would round a position of 1e5 by hundreds of radians.
"""
import inspect
import re

import jax
import jax.numpy as jnp
import pytest

import rope

S = jax.ShapeDtypeStruct
F32 = jnp.float32
ACCELERATORS = ("tpu", "cuda")

L, H, D = 16, 2, 24            # D divisible by 2, 3, 4 and 8 (pairs, triplets, axial, LieRE)
X = S((2, L, H, D), F32)       # queries / keys [B, L, H, D]
KEY = S((2,), jnp.uint32)      # a raw jax.random.PRNGKey


def _pos(p):
  return S((L, p), F32)


_K0 = jax.random.PRNGKey(0)


def _abstract(tree):
  """The shapes and dtypes of a parameter pytree, as export arguments."""
  return jax.tree.map(lambda a: S(a.shape, a.dtype), tree)


def _fire_params():
  k = jax.random.split(_K0, 4)
  return {"W1": jax.random.normal(k[0], (32,)), "b1": jax.random.normal(k[1], (32,)),
          "W2": jax.random.normal(k[2], (H, 32)), "b2": jax.random.normal(k[3], (H,)),
          "c": jnp.float32(1.0), "L": jnp.float32(8.0)}


# name -> (function of arrays, abstract arguments). Static arguments are closed over.
CASES = {
    "inv_freq": (lambda: rope.inv_freq(D), ()),
    "freqs_1d": (lambda: rope.freqs_1d(D), ()),
    "freqs_axial": (lambda: rope.freqs_axial(D), ()),
    "freqs_mrope": (lambda: rope.freqs_mrope(D, sections=(4, 4, 4)), ()),
    "freqs_mrope_interleaved": (lambda: rope.freqs_mrope_interleaved(D, sections=(4, 4, 4)), ()),
    "freqs_videorope": (lambda: rope.freqs_videorope(D, sections=(4, 4, 4)), ()),
    "freqs_multi_head": (lambda: rope.freqs_multi_head(H, D, head_sections=(1, 1, 0)), ()),
    "init_mixed_freqs": (lambda k: rope.init_mixed_freqs(k, H, D), (KEY,)),
    "init_liere": (lambda k: rope.init_liere(k, 2, H, D), (KEY,)),
    "liere_generators": (rope.liere_generators, (S((2, H, D // 8, 8, 8), F32),)),
    "liere_rotations": (rope.liere_rotations, (_pos(2), S((2, H, D // 8, 8, 8), F32))),
    "spherical_freqs": (lambda: rope.spherical_freqs(D), ()),
    "spherical_rotations": (rope.spherical_rotations, (_pos(2), S((H, D // 3, 2), F32))),
    "apply_blocks": (rope.apply_blocks, (X, S((L, H, D // 8, 8, 8), F32))),
    "angles": (rope.angles, (_pos(3), S((H, D // 2, 3), F32))),
    "apply": (lambda x, a: rope.apply(x, a, layout="interleaved"), (X, S((L, 1, D // 2), F32))),
    "apply_cos_sin": (rope.apply_cos_sin, (X, S((L, H, D // 2), F32), S((L, H, D // 2), F32))),
    "grid_cos_sin": (lambda r, c, f: rope.grid_cos_sin([r, c], f),
                     (S((4,), F32), S((4,), F32), S((H, D // 2, 2), F32))),
    "grid_positions": (lambda: rope.grid_positions(4, 4, scale="pi"), ()),
    "grid_axes": (lambda: rope.grid_axes(4, 4, scale="unit"), ()),
    "spherical_cos_sin": (rope.spherical_cos_sin, (_pos(2), S((D // 3,), F32))),
    "spherical_grid_cos_sin": (lambda r, c, f: rope.spherical_grid_cos_sin([r, c], f),
                               (S((4,), F32), S((4,), F32), S((H, D // 3, 2), F32))),
    "apply_spherical": (lambda x, *t: rope.apply_spherical(x, t, layout="thirds"),
                        (X,) + (S((L, H, D // 3), F32),) * 4),
    "circle_offsets": (lambda a, r: rope.circle_offsets(4, 4, alpha=a, radius=r),
                       (S((), F32), S((), F32))),
    "ptd": (rope.ptd, (S((5, 3), F32), S((16, 3), F32))),
    "relative_logit_gap": (
        lambda p, s, k: rope.relative_logit_gap(
            lambda x, q: rope.apply(x, rope.angles(q, rope.freqs_axial(D))), p, s, key=k,
            head_dim=D),
        (_pos(2), S((2,), F32), KEY)),
    # Second round: multimodal (docs/spec/multimodal_ext.md).
    "freqs_hope": (lambda: rope.freqs_hope(D, sections=(4, 4, 4)), ()),
    "freqs_mmrope": (lambda: rope.freqs_mmrope(D), ()),
    "freqs_cyclic": (lambda: rope.freqs_cyclic(D), ()),
    "init_grape": (lambda k: rope.init_grape(k, D, "mixed"), (KEY,)),
    "grape_plane_freqs": (lambda: rope.grape_plane_freqs(D, 1e4, "mixed"), ()),
    "grape_rotate": (lambda x, pos, params: rope.grape_rotate(
        x, pos, params, rope.grape_plane_freqs(D, 1e4, "mixed"), mode="mixed",
        orthogonalize=True), (X, _pos(3), _abstract(rope.init_grape(_K0, D, "mixed")))),
    # Second round: vision (docs/spec/vision_ext.md).
    "with_prefix": (lambda pos: rope.with_prefix(pos, 1, value=0.5), (_pos(2),)),
    "augment_positions": (lambda pos, s, j, r: rope.augment_positions(
        pos, shift=s, jitter=j, rescale=r), (_pos(2), S((2,), F32), S((2,), F32), S((1,), F32))),
    "sample_position_augment": (lambda k: rope.sample_position_augment(
        k, shift=0.1, jitter=1.2, rescale=1.5), (KEY,)),
    "perturb_positions": (lambda pos, p, o: rope.perturb_positions(pos, p, o, grid=(3, 5)),
                          (_pos(2), S((15, 2), F32), S((2,), F32))),
    "sample_comrope_perturbation": (lambda k: rope.sample_comrope_perturbation(
        k, 15, intensity=0.5, offset_intensity=1.0), (KEY,)),
    "freqs_dinov3": (lambda: rope.freqs_dinov3(D), ()),
    "dinov3_periods": (lambda: rope.dinov3_periods(D), ()),
    "freqs_eva": (lambda: rope.freqs_eva(D), ()),
    "scale_freqs": (lambda f, s: rope.scale_freqs(f, s, method="yarn", train_len=4),
                    (S((D // 2, 2), F32), S((2,), F32))),
    "attention_scale": (lambda: rope.attention_scale("yarn", (8, 8), 4), ()),
    "truncate_freqs": (lambda: rope.truncate_freqs(rope.freqs_axial(D), 0.5), ()),
    "init_comrope": (lambda k: rope.init_comrope(k, H, D, variant="ld"), (KEY,)),
    "comrope_generators": (lambda p: rope.comrope_generators(p, variant="ld"),
                           (_abstract(rope.init_comrope(_K0, H, D, variant="ld")),)),
    "skew_rotations": (rope.skew_rotations, (_pos(2), S((2, H, D // 8, 8, 8), F32))),
    "cayley": (rope.cayley, (S((H, D, D), F32),)),
    "apply_dense": (rope.apply_dense, (X, S((H, D, D), F32))),
    "string_cayley": (rope.string_cayley, (X, S((L, 1, D // 2), F32), S((H, D, D), F32))),
    "circulant_string": (rope.circulant_string, (X, _pos(2), S((2, H, D), F32))),
    "lookhere_bias": (lambda: rope.lookhere_bias(3, 5, head_directions="halves", num_heads=4,
                                                 depth=2), ()),
    "fire_bias": (lambda p: rope.fire_bias(L, p), (_abstract(_fire_params()),)),
}

# Public callables that are host-side only (static Python / NumPy in, Python / NumPy out): there
# is nothing to export.
HOST_ONLY = {
    "multimodal_positions": "segments are Python dataclasses; positions are built with NumPy",
    "age_schedule": "a static NumPy bool schedule that picks each layer's ids in Python",
    "circulant_basis": "a constant NumPy [D, D] matrix of the head size (circulant_string, "
                       "which uses it, has its case)",
    "partial_rotary_dim": "an int computed from ints (HF's rounding)",
    "Text": "a segment dataclass", "Image": "a segment dataclass", "Video": "a segment dataclass",
}


def _public_callables():
  return sorted(n for n, v in vars(rope).items()
                if not n.startswith("_") and callable(v) and not inspect.ismodule(v))


def _export(f, args, platforms=ACCELERATORS):
  return jax.export.export(jax.jit(f), platforms=platforms)(*args)


def test_every_public_function_has_an_export_case():
  missing = sorted(set(_public_callables()) - set(CASES) - set(HOST_ONLY))
  assert not missing, (f"public rope functions without a case in tests/test_export.py: "
                       f"{missing}; add one to CASES (or to HOST_ONLY, with the reason)")
  assert not set(CASES) & set(HOST_ONLY)


@pytest.mark.parametrize("name", sorted(CASES))
def test_public_function_exports_for_tpu_and_cuda(name):
  f, args = CASES[name]
  exported = _export(f, args)
  assert tuple(exported.platforms) == ACCELERATORS
  assert exported.mlir_module()


def _grad_of_sum(f, argnums):
  return jax.grad(lambda *a: jnp.sum(f(*a)), argnums=argnums)


@pytest.mark.parametrize("name", ["apply", "apply_cos_sin", "apply_blocks", "apply_spherical",
                                  "liere_rotations", "spherical_rotations", "grid_cos_sin",
                                  "grape_rotate", "skew_rotations", "string_cayley",
                                  "circulant_string", "fire_bias"])
def test_gradients_export_for_tpu_and_cuda(name):
  f, args = CASES[name]
  g = _grad_of_sum(lambda *a: jnp.stack(jax.tree.leaves(f(*a))), tuple(range(len(args))))
  assert _export(g, args).mlir_module()


# ------------------------------------------------ what the TPU program of a rotation holds

def _rotation(freqs_fn, p, learned=False):
  """`apply(x, angles(positions, freqs))` with positions (and learned freqs) as inputs."""
  if learned:
    return (lambda x, pos, f: rope.apply(x, rope.angles(pos, f)),
            (X, _pos(p), S(freqs_fn().shape, F32)))
  return (lambda x, pos: rope.apply(x, rope.angles(pos, freqs_fn()), layout="interleaved"),
          (X, _pos(p)))


COMMUTING = {
    "1d": _rotation(lambda: rope.freqs_1d(D), 1),
    "axial": _rotation(lambda: rope.freqs_axial(D), 2),
    "mixed": _rotation(lambda: rope.init_mixed_freqs(jax.random.PRNGKey(0), H, D), 2, True),
    "mrope": _rotation(lambda: rope.freqs_mrope(D, sections=(4, 4, 4)), 3),
    "mrope_interleaved": _rotation(
        lambda: rope.freqs_mrope_interleaved(D, sections=(4, 4, 4)), 3),
    "mhrope": _rotation(lambda: rope.freqs_multi_head(H, D, head_sections=(1, 1, 0)), 3),
    "grid_tables": (lambda x, r, c: rope.apply_cos_sin(
        x, *rope.grid_cos_sin([r, c], rope.freqs_axial(D)), materialize=False),
                    (S((2, 16, H, D), F32), S((4,), F32), S((4,), F32))),
    "spherical": (lambda x, pos: rope.apply_spherical(
        x, rope.spherical_cos_sin(pos, rope.spherical_freqs(D))), (X, _pos(2))),
    # Second round.
    "hope": _rotation(lambda: rope.freqs_hope(D, sections=(4, 4, 4)), 3),
    "mmrope": _rotation(lambda: rope.freqs_mmrope(D), 3),
    "cyclic": _rotation(lambda: rope.freqs_cyclic(D), 3),
    "dinov3": _rotation(lambda: rope.freqs_dinov3(D), 2),
    "eva02": _rotation(lambda: rope.freqs_eva(D), 2),
    "prope": _rotation(lambda: rope.truncate_freqs(rope.freqs_axial(D), 0.5), 2),
    "yarn": (lambda x, pos: rope.apply(
        x, rope.angles(pos, rope.scale_freqs(rope.freqs_axial(D, first="row"), [2.0, 2.0],
                                             method="yarn", train_len=4)),
        amplitude=rope.attention_scale("yarn", (8, 8), 4)), (X, _pos(2))),
    "partial_rotary": (lambda x, pos: rope.apply(x, rope.angles(pos, rope.freqs_1d(D // 2))),
                       (X, _pos(1))),
}


def _ops(text):
  return set(re.findall(r"stablehlo\.([a-z_]+)", text))


@pytest.mark.parametrize("name", sorted(COMMUTING))
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_commuting_rotation_on_tpu_is_plain_trig_without_dots(name, grad):
  f, args = COMMUTING[name]
  if grad:
    f = _grad_of_sum(f, tuple(range(len(args))))
  ops = _ops(_export(f, args, ("tpu",)).mlir_module())
  assert {"cosine", "sine"} <= ops, ops
  assert "dot_general" not in ops and "dot" not in ops, ops   # no identity matmul
  assert "round_nearest_even" not in ops, ops                  # no CPU polynomial trig
  if not grad:   # no CPU sum-of-pads joins (a slice's gradient is a pad, hence forward only)
    assert "pad" not in ops, ops


NON_COMMUTING = {
    "liere": (lambda x, pos, w: rope.apply_blocks(x, rope.liere_rotations(pos, w)),
              (X, _pos(2), S((2, H, D // 8, 8, 8), F32))),
    "liere_64": (lambda x, pos, w: rope.apply_blocks(x, rope.liere_rotations(pos, w)),
                 (S((2, L, H, 64), F32), _pos(2), S((2, H, 1, 64, 64), F32))),
    "spherical_blocks": (lambda x, pos, f: rope.apply_blocks(x, rope.spherical_rotations(pos, f)),
                         (X, _pos(2), S((H, D // 3, 2), F32))),
    "comrope": (lambda x, pos, p: rope.apply_blocks(
        x, rope.skew_rotations(pos, rope.comrope_generators(p, variant="ld"))),
                (X, _pos(2), _abstract(rope.init_comrope(_K0, H, D, variant="ld")))),
    "string_cayley": (lambda x, pos, s: rope.string_cayley(
        x, rope.angles(pos, rope.freqs_axial(D)), rope.cayley(s - jnp.swapaxes(s, -1, -2))),
                      (X, _pos(2), S((H, D, D), F32))),
}


@pytest.mark.parametrize("name", sorted(NON_COMMUTING))
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_every_dot_on_tpu_is_highest_precision(name, grad):
  f, args = NON_COMMUTING[name]
  if grad:
    f = _grad_of_sum(f, tuple(range(len(args))))
  text = _export(f, args, ("tpu",)).mlir_module()
  dots = [line for line in text.splitlines() if "stablehlo.dot" in line]
  assert dots
  for line in dots:
    assert "precision = [HIGHEST, HIGHEST]" in line, line
  assert "round_nearest_even" not in _ops(text)               # no CPU polynomial trig


def test_cpu_program_uses_the_cpu_kernels():
  # On CPU the same function lowers to the vectorised polynomial trig (`round` for the
  # quadrant) and the fusion barrier (a dot), not to the plain formulation.
  f, args = COMMUTING["1d"]
  ops = _ops(_export(f, args, ("cpu",)).mlir_module())
  assert {"round_nearest_even", "dot_general"} <= ops, ops
  both = _ops(_export(f, args, ("cpu", "tpu")).mlir_module())  # multi-platform: both branches
  assert {"round_nearest_even", "cosine", "case"} <= both, both
