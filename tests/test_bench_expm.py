"""benchmarks/bench_expm.py: the exponential's inputs and its FLOP count (tiny sizes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import rope
from benchmarks import bench_expm
from rope import _expm


def test_generators_are_the_liere_step_inputs():
  a = bench_expm.generators("Ti/16", 48, 8)            # 3x3 grid + class token, 3 heads of 64
  assert a.shape == (10, 3, 8, 8, 8)
  np.testing.assert_array_equal(a[0], 0)               # class token at position 0: expm = I
  np.testing.assert_allclose(a, -jnp.swapaxes(a, -1, -2), atol=0)   # skew-symmetric
  # Token 1 is grid (0, 0) (unit positions start at 0); the last token is (1, 1): S_row + S_col.
  s = rope.liere_generators(rope.init_liere(jax.random.key(0), 2, 3, 64, 8))
  np.testing.assert_allclose(a[-1], s[0] + s[1], rtol=1e-6, atol=1e-5)
  # What the benchmark times is LieRE's rotation of these tokens.
  r = _expm.expm(a[-1, 0, 0])
  np.testing.assert_allclose(r, scipy.linalg.expm(np.asarray(a[-1, 0, 0], np.float64)),
                             atol=2e-4)


def test_flops_count_the_products_the_exponential_runs():
  eye = np.eye(4, dtype=np.float32)
  skew = np.array([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
  # |A|_F = 6 * sqrt(2) = 8.5 -> 4 squarings for the largest matrix, none for the zero one.
  a = jnp.asarray(np.stack([0 * eye, 6 * skew]))
  products, flops = bench_expm.expm_flops(a)
  assert products == _expm.POLYNOMIAL_PRODUCTS + 4
  assert flops == 3 * products * 2 * 2 * 4 ** 3        # fwd + 2x bwd, 2 matrices of 2 g^3


@pytest.mark.parametrize("argv, match", [(["--block_sizes", "5"], "--block_sizes"),
                                         (["--block_sizes", "a"], "--block_sizes"),
                                         (["--image_size", "100"], "--image_size"),
                                         (["--repeats", "0"], "--repeats")])
def test_bad_arguments_are_named(argv, match):
  with pytest.raises(ValueError, match=match):
    bench_expm.main(argv)


def test_runs_end_to_end(capsys):
  bench_expm.main(["--variant", "Ti/16", "--image_size", "32", "--block_sizes", "8",
                   "--repeats", "1", "--batch_size", "2"])
  out = capsys.readouterr().out
  assert "g=8: 120 matrices" in out and "at the GEMM rate" in out
