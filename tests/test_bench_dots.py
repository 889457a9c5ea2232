"""benchmarks/bench_dots.py: the step's dot shapes and their forms (tiny sizes, no timings)."""
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bench_dots


def test_shapes_cover_every_block_dot_in_three_forms_and_count_the_flops():
  rows = bench_dots.shapes("S/16", 112, 32)
  names = [r[0] for r in rows]
  for dot in ("qkv", "out", "fc1", "fc2"):
    assert [f"{dot} fwd", f"{dot} dx", f"{dot} dW"] == [n for n in names if n.startswith(dot)]
  fwd = {n: d for n, k, d, c in rows if n.endswith("fwd")}
  assert fwd["qkv fwd"] == ("NN", 32 * 50, 384, 1152) and fwd["fc2 fwd"][1:] == (1600, 1536, 384)
  assert all(c == 12 for n, k, d, c in rows if not n.startswith("patch"))
  # Forward FLOPs of the four projections per block = 2 * M * width * (3w + w + 2 * mlp).
  flops = sum(bench_dots.operands(k, d, np.random.default_rng(0))[2]
              for n, k, d, c in rows if n.endswith("fwd") and not n.startswith("patch"))
  assert flops == 2 * 1600 * 384 * (4 * 384 + 2 * 1536)


@pytest.mark.parametrize("kind, dims", [("mm", ("NN", 5, 3, 4)), ("mm", ("NT", 5, 3, 4)),
                                        ("mm", ("TN", 5, 3, 4)), ("bmm", ("NN", 2, 5, 3, 4)),
                                        ("bmm", ("NT", 2, 5, 3, 4)), ("bmm", ("TN", 2, 5, 3, 4))])
def test_each_form_is_the_product_it_names(kind, dims):
  a, b, flops = bench_dots.operands(kind, dims, np.random.default_rng(1))
  form = dims[0]
  t = lambda x: np.swapaxes(x, -1, -2)
  want = {"NN": lambda: a @ b, "NT": lambda: a @ t(b), "TN": lambda: t(a) @ b}[form]()
  got = bench_dots.jax_dot(kind, form)(jnp.asarray(a), jnp.asarray(b))
  assert got.shape == want.shape == ((2,) if kind == "bmm" else ()) + (5, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert flops == 2 * (2 if kind == "bmm" else 1) * 5 * 3 * 4


def test_bad_torch_step_argument_is_named():
  with pytest.raises(ValueError, match="--torch_step_ms"):
    bench_dots.main(["--torch_step_ms", "112:1446"])
