"""Bad settings of the second-round vision functions raise ValueError naming the argument."""
import jax
import jax.numpy as jnp
import pytest

import rope

KEY = jax.random.PRNGKey(0)
X = jnp.zeros((6, 2, 32))
POS = rope.grid_positions(2, 3, scale="center")
ANG = rope.angles(rope.grid_positions(2, 3), rope.freqs_axial(32))
FIRE = {"W1": jnp.ones(8), "b1": jnp.ones(8), "W2": jnp.ones((2, 8)), "b2": jnp.ones(2),
        "c": 0.1, "L": 8.0}
P_AP = {"P": jnp.zeros((2, 4, 8, 8))}

CASES = [
    # positions
    (lambda: rope.grid_positions(2, 3, scale="centred"), r"scale.*centered"),
    (lambda: rope.grid_positions(2, 3, scale="centered", normalize="both"),
     r"normalize.*separate"),
    (lambda: rope.grid_positions(2, 3, scale="index_interp", train_size=(0, 3)), r"train_size"),
    (lambda: rope.with_prefix(POS, -1), r"num_prefix"),
    (lambda: rope.with_prefix(POS, 1.5), r"num_prefix"),
    (lambda: rope.with_prefix(POS, 1, value=jnp.zeros(3)), r"value"),
    (lambda: rope.with_prefix(jnp.zeros(4), 1), r"positions"),
    (lambda: rope.augment_positions(POS, shift=jnp.zeros(3)), r"shift"),
    (lambda: rope.augment_positions(POS, jitter=jnp.float32(1.0)), r"jitter"),
    (lambda: rope.augment_positions(POS, rescale=jnp.ones(3)), r"rescale"),
    (lambda: rope.sample_position_augment(KEY, shift=-0.1), r"shift.*>= 0"),
    (lambda: rope.sample_position_augment(KEY, jitter=0.8), r"jitter.*>= 1"),
    (lambda: rope.sample_position_augment(KEY, rescale=0.5), r"rescale.*>= 1"),
    (lambda: rope.sample_position_augment(KEY, rescale="2"), r"rescale"),
    (lambda: rope.sample_position_augment(KEY, num_axes=0), r"num_axes"),
    (lambda: rope.perturb_positions(POS, jnp.zeros((6, 2)), jnp.zeros(2), grid=(2, 3)),
     r"perturbation.*num_prefix=1"),
    (lambda: rope.perturb_positions(POS, jnp.zeros((6, 2)), jnp.zeros(2), num_prefix=0,
                                    grid=(2,)), r"grid"),
    (lambda: rope.perturb_positions(POS, jnp.zeros((6, 2)), jnp.zeros(3), num_prefix=0,
                                    grid=(2, 3)), r"offset"),
    (lambda: rope.sample_comrope_perturbation(KEY, 6, intensity=-1.0, offset_intensity=0.0),
     r"intensity"),
    (lambda: rope.sample_comrope_perturbation(KEY, 0, intensity=1.0, offset_intensity=0.0),
     r"num_patches"),
    # tables
    (lambda: rope.freqs_axial(32, first="x"), r"first.*row"),
    (lambda: rope.freqs_dinov3(30), r"head_dim.*divisible by 4"),
    (lambda: rope.freqs_dinov3(32, 100.0, min_period=1.0, max_period=10.0), r"base.*not both"),
    (lambda: rope.freqs_dinov3(32, min_period=1.0), r"min_period.*max_period"),
    (lambda: rope.freqs_dinov3(32, base=-1.0), r"base"),
    (lambda: rope.freqs_dinov3(32, periods_dtype="float16"), r"periods_dtype.*bfloat16"),
    (lambda: rope.freqs_eva(34), r"head_dim.*divisible by 4"),
    (lambda: rope.scale_freqs(rope.freqs_eva(32), [2.0, 1.0], method="dynamic", train_len=4),
     r"method.*yarn"),
    (lambda: rope.scale_freqs(rope.freqs_eva(32), [2.0, 1.0, 1.0], method="ntk", train_len=4),
     r"scale"),
    (lambda: rope.scale_freqs(rope.freqs_eva(32), 2.0, method="ntk", train_len=0), r"train_len"),
    (lambda: rope.scale_freqs(rope.freqs_eva(32), 2.0, method="ntk", train_len=4, theta=1.0),
     r"theta"),
    (lambda: rope.scale_freqs(rope.init_mixed_freqs(KEY, 1, 32)[0], 2.0, method="linear",
                              train_len=4), r"freqs.*several position components"),
    (lambda: rope.attention_scale("yarn2", (8, 8), 4), r"method.*pro1"),
    (lambda: rope.attention_scale("yarn", (8,), 4), r"test_size"),
    (lambda: rope.attention_scale("yarn", (8, 8), -4), r"train_len"),
    (lambda: rope.truncate_freqs(rope.freqs_axial(32), 1.5), r"proportion"),
    (lambda: rope.truncate_freqs(rope.init_mixed_freqs(KEY, 1, 32)[0], 0.5),
     r"freqs.*several position components"),
    (lambda: rope.truncate_freqs(jnp.zeros(8), 0.5), r"freqs"),
    # ComRoPE
    (lambda: rope.init_comrope(KEY, 2, 40, variant="ap", block_size=8), r"head_dim.*num_axes"),
    (lambda: rope.init_comrope(KEY, 2, 36, variant="ld", block_size=8), r"head_dim.*block_size"),
    (lambda: rope.init_comrope(KEY, 2, 32, variant="ab"), r"variant.*ld"),
    (lambda: rope.init_comrope(KEY, 2, 32, block_size=1), r"block_size"),
    (lambda: rope.init_comrope(KEY, 0, 32), r"num_heads"),
    (lambda: rope.comrope_generators(P_AP, variant="ld"), r"theta"),
    (lambda: rope.comrope_generators({"P": jnp.zeros((2, 4, 8, 8)), "theta": jnp.zeros((3, 4))},
                                     variant="ld"), r"theta.*\[2, 4\]"),
    (lambda: rope.comrope_generators(P_AP, variant="ap", num_axes=3), r"blocks.*num_axes=3"),
    (lambda: rope.comrope_generators({"Q": 1}, variant="ap"), r"params"),
    (lambda: rope.comrope_generators({"P": jnp.zeros((2, 4, 8, 4))}, variant="ap"), r"square"),
    (lambda: rope.skew_rotations(POS, jnp.zeros((3, 2, 4, 8, 8))), r"positions.*A=3"),
    (lambda: rope.skew_rotations(POS, jnp.zeros((2, 4, 8, 8))), r"generators"),
    # STRING
    (lambda: rope.cayley(jnp.zeros((2, 4, 5))), r"S.*square"),
    (lambda: rope.apply_dense(X, jnp.zeros((3, 32, 32))), r"M.*\[2\|1, 32, 32\]"),
    (lambda: rope.apply_dense(X, jnp.zeros((2, 16, 16))), r"M"),
    (lambda: rope.string_cayley(X, ANG, jnp.zeros((2, 32, 32)), layout="rotate"), r"layout"),
    (lambda: rope.string_cayley(X, jnp.zeros((6, 1, 20)), jnp.zeros((2, 32, 32))), r"angles"),
    (lambda: rope.circulant_string(X, POS, jnp.zeros((2, 3, 32))), r"c.*H=2"),
    (lambda: rope.circulant_string(X, POS, jnp.zeros((2, 2, 3, 8))), r"c.*24 channels"),
    (lambda: rope.circulant_string(X, POS, jnp.zeros((3, 2, 32))), r"positions"),
    (lambda: rope.circulant_string(X[0], POS, jnp.zeros((2, 2, 32))), r"x"),
    # biases
    (lambda: rope.lookhere_bias(4, 5, head_directions="spiral", num_heads=4, depth=2),
     r"head_directions.*halves"),
    (lambda: rope.lookhere_bias(4, 5, head_directions="halves", num_heads=6, depth=2),
     r"head_directions.*num_heads"),
    (lambda: rope.lookhere_bias(4, 5, head_directions=["halves"], num_heads=4, depth=2),
     r"head_directions.*depth=2"),
    (lambda: rope.lookhere_bias(4, 5, head_directions="halves", num_heads=4, depth=2,
                                distance="manhattan"), r"distance.*linear"),
    (lambda: rope.lookhere_bias(4, 5, head_directions="halves", num_heads=4, depth=2,
                                layer_slopes=(1.0,)), r"layer_slopes"),
    (lambda: rope.lookhere_bias(4, 5, head_directions="halves", num_heads=4, depth=2,
                                num_prefix=-1), r"num_prefix"),
    (lambda: rope.lookhere_bias(0, 5, head_directions="halves", num_heads=4, depth=2), r"height"),
    (lambda: rope.fire_bias(0, FIRE), r"num_tokens"),
    (lambda: rope.fire_bias(5, {k: v for k, v in FIRE.items() if k != "L"}), r"params.*L"),
    (lambda: rope.fire_bias(5, dict(FIRE, W2=jnp.ones((2, 7)))), r"params.*W2"),
]


@pytest.mark.parametrize("fn, match", CASES, ids=[m for _, m in CASES])
def test_raises_value_error_naming_the_argument(fn, match):
  with pytest.raises(ValueError, match=match):
    fn()


def test_errors_raise_under_jit_too():
  """The checks run on static shapes and settings, before XLA sees anything."""
  with pytest.raises(ValueError, match=r"positions.*A=3"):
    jax.jit(rope.skew_rotations)(POS, jnp.zeros((3, 2, 4, 8, 8)))
  with pytest.raises(ValueError, match=r"method"):
    jax.jit(lambda s: rope.scale_freqs(rope.freqs_eva(32), s, method="ntk2", train_len=4))(
        jnp.ones(2))
