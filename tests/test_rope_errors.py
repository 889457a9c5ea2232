"""Bad settings raise ValueError naming the argument and what is allowed, before compiling."""
import jax
import jax.numpy as jnp
import pytest

import rope

KEY = jax.random.PRNGKey(0)
X = jnp.zeros((6, 2, 64))
POS2 = rope.grid_positions(2, 3)

CASES = [
    # head dims the variant cannot split
    (lambda: rope.inv_freq(63), "head_dim"),
    (lambda: rope.freqs_axial(62), r"head_dim.*divisible by 4"),
    (lambda: rope.init_mixed_freqs(KEY, 2, 62), r"head_dim.*divisible by 4"),
    (lambda: rope.spherical_freqs(64), r"head_dim.*divisible by 3"),
    (lambda: rope.init_liere(KEY, 2, 2, 64, block_size=6), r"head_dim.*block_size=6"),
    (lambda: rope.init_liere(KEY, 2, 2, 64, block_size=1), r"block_size"),
    (lambda: rope.init_liere(KEY, 2, 0, 64), r"num_heads"),
    # sections
    (lambda: rope.freqs_mrope(64), r"sections.*sum to head_dim/2 = 32"),
    (lambda: rope.freqs_mrope_interleaved(64), r"sections.*sum to head_dim/2 = 32"),
    (lambda: rope.freqs_mrope(64, sections=(8, 12)), r"sections.*three"),
    (lambda: rope.freqs_videorope(64, sections=(8, 10, 14)), r"sections.*s_h must"),
    (lambda: rope.freqs_multi_head(4, 64, head_sections=(2, 3, 3)), r"head_sections.*num_heads"),
    # schemes and options
    (lambda: rope.multimodal_positions([rope.Text(3)], "rope3d"), r"scheme.*allowed.*mrope"),
    (lambda: rope.multimodal_positions([rope.Text(3)], "mrope", alpha=0.5),
     r"option.*alpha.*temporal_stride"),
    (lambda: rope.multimodal_positions([rope.Video(2, 3, 3)], "circle"), r"circle.*video"),
    (lambda: rope.multimodal_positions([rope.Text(2)], "circle", radius="big"), r"radius"),
    (lambda: rope.multimodal_positions([], "mrope"), r"segments"),
    (lambda: rope.multimodal_positions([rope.Text(2), (3, 3)], "mrope"), r"segments\[1\]"),
    (lambda: rope.Text(0), r"Text.n"),
    (lambda: rope.Image(2, 0), r"Image.w"),
    (lambda: rope.Video(0, 2, 2), r"Video.t"),
    (lambda: rope.age_schedule(12, "strategy_4"), r"strategy.*alternate"),
    (lambda: rope.grid_positions(2, 3, scale="norm"), r"scale.*index"),
    (lambda: rope.grid_positions(2, 3, train_size=(2,)), r"train_size"),
    (lambda: rope.grid_positions(0, 3), r"height"),
    # mismatched shapes
    (lambda: rope.angles(POS2, rope.freqs_1d(64)), r"positions.*freqs.*last axes"),
    (lambda: rope.angles(POS2, jnp.zeros((32,))), r"freqs.*2 or 3 dimensions"),
    (lambda: rope.apply(X, rope.angles(POS2, rope.freqs_axial(128))), r"angles.*D/2"),
    (lambda: rope.apply(X, rope.angles(POS2, rope.freqs_axial(32)), rotary_dim=48),
     r"rotary_dim.*angles"),
    (lambda: rope.apply(X, rope.angles(POS2, rope.freqs_axial(64)), rotary_dim=63),
     r"rotary_dim.*even"),
    (lambda: rope.apply(X, rope.angles(POS2, rope.freqs_axial(64)), rotary_dim=66),
     r"rotary_dim.*even"),
    (lambda: rope.partial_rotary_dim(64, 0.0), r"factor"),
    (lambda: rope.apply_cos_sin(X, jnp.ones((6, 1, 16)), jnp.ones((6, 1, 16)), rotary_dim=48),
     r"rotary_dim.*`cos`"),
    (lambda: rope.apply(X, rope.angles(POS2, rope.freqs_axial(64)), layout="complex"),
     r"layout.*half.*interleaved"),
    (lambda: rope.apply(X, rope.angles(POS2, rope.init_mixed_freqs(KEY, 3, 64))), r"heads"),
    (lambda: rope.apply(X[:4], rope.angles(POS2, rope.freqs_axial(64))), r"tokens"),
    (lambda: rope.apply(jnp.zeros((6, 63)), jnp.zeros((6, 1, 31))), r"x"),
    (lambda: rope.liere_rotations(jnp.zeros((6, 3)), rope.init_liere(KEY, 2, 2, 64)),
     r"positions.*A=2"),
    (lambda: rope.liere_rotations(POS2, jnp.zeros((2, 2, 8, 8))), r"params"),
    (lambda: rope.spherical_rotations(jnp.zeros((6, 3)), rope.spherical_freqs(63)),
     r"positions.*row, col"),
    (lambda: rope.spherical_rotations(POS2, jnp.zeros((2, 21))), r"freqs"),
    (lambda: rope.apply_blocks(X, rope.spherical_rotations(POS2, rope.spherical_freqs(63))),
     r"rotations.*head_dim 64"),
    (lambda: rope.apply_blocks(X[:4], rope.liere_rotations(POS2, rope.init_liere(KEY, 2, 2, 64))),
     r"tokens"),
    (lambda: rope.ptd(jnp.zeros((3, 2)), jnp.zeros((4, 3))), r"text_positions.*image_positions"),
    (lambda: rope.relative_logit_gap(lambda x, p: x, POS2, jnp.zeros(3), key=KEY, head_dim=4),
     r"shift"),
]


@pytest.mark.parametrize("fn,match", CASES, ids=[m for _, m in CASES])
def test_value_error_names_the_argument(fn, match):
  with pytest.raises(ValueError, match=match):
    fn()


def test_errors_raise_while_tracing_not_from_compiled_code():
  """Shape checks are static: under jit they fire during tracing, with the same message."""
  f = jax.jit(lambda x: rope.apply(x, rope.angles(POS2, rope.freqs_axial(128))))
  with pytest.raises(ValueError, match=r"angles.*D/2"):
    f(X)
