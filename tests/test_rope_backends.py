"""The CPU kernels (rope/_cpu.py) against the plain jax.numpy formulation (rope/_kernels.py).

On CPU the public functions run the CPU kernels (`jax.lax.platform_dependent`); the fixture
`plain` forces the default branch, which is what TPU and GPU run. Values and gradients must
agree to float32 rounding, through jit, vmap and grad. The CPU trig must agree with float64
cos / sin of the same float32 angle to 1e-6 at every angle up to 2^24 (1-D RoPE at position
500,000 and beyond).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rope
from rope import _cpu
from rope import _kernels


@pytest.fixture
def plain(monkeypatch):
  """Runs everything with the plain formulation (the TPU / GPU branch), on CPU."""
  monkeypatch.setattr(_kernels, "dispatch", lambda *args, cpu, default: default(*args))


# ------------------------------------------------------------------------------- trig

def _trig_error(x):
  cos, sin = jax.jit(_cpu.cos_sin)(x)
  x64 = np.asarray(x, np.float64)
  return max(np.abs(np.asarray(cos, np.float64) - np.cos(x64)).max(),
             np.abs(np.asarray(sin, np.float64) - np.sin(x64)).max())


def test_cpu_trig_exact_to_1e6_at_every_angle_up_to_2_pow_24():
  rng = np.random.default_rng(0)
  octaves = [rng.uniform(2.0 ** e, 2.0 ** (e + 1), 50_000) for e in range(-20, 24)]
  x = np.concatenate(octaves + [np.geomspace(1e-30, 2.0 ** 24, 100_000)]).astype(np.float32)
  x = np.concatenate([x, -x])
  assert _trig_error(x) < 2e-7          # measured 1.5e-7 (1.2e-7 below 2^20)
  # Every float32 of the last 2^20 below 2^24 (where k = round(x 2/pi) is ~1e7).
  top = np.arange(2 ** 24 - 2 ** 20, 2 ** 24 + 1, dtype=np.float64).astype(np.float32)
  assert _trig_error(top) < 2e-7


@pytest.mark.parametrize("angle", [5e5, 4e6, 2.0 ** 24, -5e5, -4e6, -2.0 ** 24, 1e5 * 0.9999,
                                   12345.678])
def test_cpu_trig_at_long_context_angles(angle):
  # The old polynomial (reduction exact to ~5e4) was off by 1.2e-2 at 5e5 and 0.1 at 4e6.
  assert _trig_error(np.array([angle], np.float32)) < 2e-7


def test_cpu_trig_identity_at_zero_and_libm_beyond_2_pow_24():
  cos, sin = jax.jit(_cpu.cos_sin)(np.array([0.0, -0.0], np.float32))
  assert np.all(np.asarray(cos) == 1.0) and np.all(np.asarray(sin) == 0.0)
  big = np.array([1.0, 3e7, -1e9, 3e38], np.float32)      # a table with |x| > 2^24 anywhere
  cos, sin = jax.jit(_cpu.cos_sin)(big)
  np.testing.assert_array_equal(cos, jnp.cos(big))
  np.testing.assert_array_equal(sin, jnp.sin(big))
  cos, sin = jax.jit(_cpu.cos_sin)(np.array([1.0, np.nan, np.inf], np.float32))
  assert np.isnan(cos[1:]).all() and np.isnan(sin[1:]).all()
  assert abs(float(cos[0]) - np.cos(1.0)) < 2e-7


def test_position_500k_1d_rope_matches_float64():
  pos = jnp.array([[500_000.0], [4_000_000.0]])
  freqs = rope.freqs_1d(64)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 64))
  out = jax.jit(lambda x, p: rope.apply(x, rope.angles(p, freqs)))(x, pos)
  ang = np.asarray(rope.angles(pos, freqs), np.float64)          # float32 angles, as rotated
  c, s = np.cos(ang), np.sin(ang)
  x64 = np.asarray(x, np.float64)
  x1, x2 = x64[..., :32], x64[..., 32:]
  ref = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)
  assert np.abs(np.asarray(out, np.float64) - ref).max() < 2e-6


# ------------------------------------------------------- CPU kernels vs the plain branch

L, H = 12, 3


def _cases():
  k = jax.random.split(jax.random.PRNGKey(1), 8)
  x = jax.random.normal(k[0], (2, L, H, 24))
  # Positions on a 1/4 grid and frequencies on a 1/64 grid: every angle (a sum of two products)
  # is exact in float32, so both programs rotate by the same angles however XLA fuses the
  # product. Otherwise one rounding of a 231-rad angle (an ulp is 1.5e-5) can differ between
  # two fusions (measured at LLVM -O0 with the classic emitters) and exceed the tolerance:
  # the rounding of the angle, not a difference of the kernels.
  pos2 = jnp.round(4 * jax.random.uniform(k[1], (L, 2), minval=-20.0, maxval=200.0)) / 4
  mixed = jnp.round(64 * rope.init_mixed_freqs(k[2], H, 24)) / 64
  liere = rope.init_liere(k[3], 2, H, 24, block_size=8)
  liere64 = rope.init_liere(k[4], 2, 1, 64) * 0.05
  sph = jax.random.normal(k[5], (H, 8, 2))
  rows, cols = jnp.arange(3.0), jnp.arange(4.0)
  x_grid = jax.random.normal(k[6], (2, 12, H, 24))
  x64 = jax.random.normal(k[7], (2, L, 1, 64))
  cay = 0.4 * jax.random.normal(k[0], (H, 24, 24))   # Cayley-STRING's generator parameters
  ang = lambda f: rope.angles(pos2, f)
  pos3 = jnp.concatenate([pos2[:, :1], pos2], axis=-1)              # (t, h, w), exact
  grape16 = rope.init_grape(k[4], 16, "mixed", rope_init=False)      # 16 of 24 channels
  # Random planes; one-hot axis weights keep the phases exact (as above).
  grape16["axis_weight"] = jax.nn.one_hot(jnp.arange(8) % 3, 3)
  grape_freqs = jnp.round(64 * rope.grape_plane_freqs(16, 100.0, "mixed")) / 64
  return {
      "cayley": (lambda w: rope.cayley(w - jnp.swapaxes(w, -1, -2)), (cay,)),
      "string_cayley": (lambda x, f, w: rope.string_cayley(
          x, ang(f), rope.cayley(w - jnp.swapaxes(w, -1, -2))), (x, mixed, cay)),
      "apply_half": (lambda x, f: rope.apply(x, ang(f)), (x, mixed)),
      "apply_interleaved": (lambda x, f: rope.apply(x, ang(f), layout="interleaved"), (x, mixed)),
      "apply_partial_amplitude": (
          lambda x, f: rope.apply(x, ang(f[:, :4]), rotary_dim=8, amplitude=1.3), (x, mixed)),
      "grape_pass_through": (lambda x, p: rope.grape_rotate(x, pos3, p, grape_freqs, mode="mixed"),
                             (x, grape16)),
      "apply_long_context": (
          lambda x, p: rope.apply(x, rope.angles(p, rope.freqs_1d(24))),
          (x, jnp.arange(L, dtype=jnp.float32)[:, None] * 60_000.0)),
      "apply_cos_sin_unmaterialized": (
          lambda x, f: rope.apply_cos_sin(x, *rope.grid_cos_sin([rows, cols], f),
                                          layout="interleaved", materialize=False),
          (x_grid, mixed)),
      "grid_cos_sin": (lambda f: jnp.stack(rope.grid_cos_sin([rows, cols], f)), (mixed,)),
      "liere": (lambda x, w: rope.apply_blocks(x, rope.liere_rotations(pos2 / 50, w)),
                (x, liere)),
      "liere_64": (lambda x, w: rope.apply_blocks(x, rope.liere_rotations(pos2 / 50, w)),
                   (x64, liere64)),
      "spherical_blocks": (
          lambda x, f: rope.apply_blocks(x, rope.spherical_rotations(pos2, f)), (x, sph)),
      "spherical_interleaved": (
          lambda x, f: rope.apply_spherical(x, rope.spherical_cos_sin(pos2, f)), (x, sph)),
      "spherical_thirds_grid": (
          lambda x, f: rope.apply_spherical(x, rope.spherical_grid_cos_sin([rows, cols], f),
                                            layout="thirds", materialize=False), (x_grid, sph)),
  }


CASES = sorted(_cases())


def _loss(f):
  def loss(*args):
    y = f(*args)
    return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)))
  return loss


def _run(name):
  f, args = _cases()[name]
  val = jax.jit(f)(*args)
  grads = jax.jit(jax.grad(_loss(f), argnums=tuple(range(len(args)))))(*args)
  return val, grads


def _close(a, b, tol):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  scale = max(1.0, np.abs(b).max())
  assert np.abs(a - b).max() <= tol * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("name", CASES)
def test_cpu_kernels_equal_plain_formulation(name, monkeypatch):
  cpu_val, cpu_grads = _run(name)
  monkeypatch.setattr(_kernels, "dispatch", lambda *args, cpu, default: default(*args))
  plain_val, plain_grads = _run(name)
  tol = 2e-5 if name.startswith("liere") else 2e-6
  _close(cpu_val, plain_val, tol)
  for g_cpu, g_plain in zip(jax.tree.leaves(cpu_grads), jax.tree.leaves(plain_grads)):
    _close(g_cpu, g_plain, 10 * tol)


def test_dispatch_selects_the_cpu_kernel_on_cpu():
  # Eagerly (platform known: no conditional at all) and under jit the CPU branch runs: the
  # polynomial's result differs from jnp.cos in the last bits somewhere in a large table.
  a = jnp.linspace(-1e4, 1e4, 4001, dtype=jnp.float32)
  eager = _kernels.cos_sin(a)[0]
  jitted = jax.jit(lambda a: _kernels.cos_sin(a))(a)[0]
  np.testing.assert_array_equal(eager, _cpu.cos_sin(a)[0])
  np.testing.assert_array_equal(jitted, _cpu.cos_sin(a)[0])
  assert np.any(np.asarray(jitted) != np.asarray(jnp.cos(a)))


def test_plain_fixture_runs_the_default_branch(plain):
  a = jnp.linspace(-1e4, 1e4, 4001, dtype=jnp.float32)
  # A fresh function: jax.jit(_kernels.cos_sin) may be cached with the CPU branch already.
  np.testing.assert_array_equal(jax.jit(lambda a: _kernels.cos_sin(a))(a)[0], jnp.cos(a))


@pytest.mark.parametrize("use_plain", [False, True], ids=["cpu", "plain"])
def test_vmap_and_grad_through_the_dispatch(use_plain, monkeypatch):
  if use_plain:
    monkeypatch.setattr(_kernels, "dispatch", lambda *args, cpu, default: default(*args))
  k1, k2 = jax.random.split(jax.random.PRNGKey(4))
  x = jax.random.normal(k1, (3, L, H, 8))
  freqs = rope.init_mixed_freqs(k2, H, 8)
  pos = jnp.stack([jnp.arange(L, dtype=jnp.float32) * (i + 1) for i in range(3)])[..., None]
  pos = jnp.concatenate([pos, pos * 0.5], -1)                       # [3, L, 2]
  f = lambda x, p, fr: rope.apply(x, rope.angles(p, fr), layout="interleaved")
  batched = jax.jit(jax.vmap(f, in_axes=(0, 0, None)))(x, pos, freqs)
  looped = jnp.stack([f(x[i], pos[i], freqs) for i in range(3)])
  np.testing.assert_allclose(batched, looped, atol=1e-5)   # angles up to ~30: ulp 2e-6
  loss = lambda fr: jnp.sum(jax.vmap(f, in_axes=(0, 0, None))(x, pos, fr) ** 3)
  g_jit = jax.jit(jax.grad(loss))(freqs)
  g_eager = jax.grad(loss)(freqs)
  np.testing.assert_allclose(g_jit, g_eager, rtol=1e-5, atol=1e-4)
  # Finite differences of the float32 loss along one direction.
  d = jax.random.normal(jax.random.PRNGKey(5), freqs.shape) * 1e-3
  fd = (loss(freqs + d) - loss(freqs - d)) / 2
  np.testing.assert_allclose(jnp.vdot(g_jit, d), fd, rtol=5e-2)
  # vmap over the blocks path and the expm too.
  w = rope.init_liere(k2, 2, H, 8, block_size=4) * 0.1
  rot = jax.jit(jax.vmap(rope.liere_rotations, in_axes=(0, None)))(pos / L, w)
  np.testing.assert_allclose(rot[1], rope.liere_rotations(pos[1] / L, w), atol=1e-5)


# Two layers' Cayley transforms in one program, forward and backward, called repeatedly: with
# jaxlib's LAPACK solve, XLA:CPU's thread pool deadlocks on a 2-core host (jax 0.10.2; the
# second call never returns). A subprocess with a timeout, so that a regression fails instead
# of hanging the suite.
_CAYLEY_LAYERS = """
import jax, jax.numpy as jnp, rope
def loss(ws, x):
  total = 0.0
  for w in ws:
    x = jnp.einsum("bnhd,hde->bnhe", x, rope.cayley(w - jnp.swapaxes(w, -1, -2)))
    total = total + jnp.sum(x ** 2)
  return total
ws = [0.1 * jax.random.normal(jax.random.key(i), (6, 64, 64)) for i in range(4)]
x = jax.random.normal(jax.random.key(9), (32, 50, 6, 64))
step = jax.jit(jax.grad(loss))
for _ in range(3):
  jax.block_until_ready(step(ws, x))
print("done")
"""


def test_cayley_layers_do_not_deadlock_xla_cpu():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  try:
    proc = subprocess.run([sys.executable, "-c", _CAYLEY_LAYERS], capture_output=True,
                          text=True, timeout=120, check=False)
  except subprocess.TimeoutExpired:
    pytest.fail("four Cayley transforms' gradient did not return within 120 s (a deadlock)")
  assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr[-2000:]
