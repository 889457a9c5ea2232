"""Second-round multimodal options: bad values raise ValueError naming the option and the
allowed values (docs/spec/multimodal_ext.md §8, API.md "Contract additions, second round")."""
import jax
import jax.numpy as jnp
import pytest

import rope

KEY = jax.random.PRNGKey(0)
VID = [rope.Text(2), rope.Video(2, 2, 2), rope.Text(1)]
X = jnp.zeros((4, 1, 32))
POS = jnp.zeros((4, 3))
MIXED = rope.init_grape(None, 32, "mixed")
PF = rope.grape_plane_freqs(32, 1e6, "mixed")

CASES = [
    # schemes and their options
    (lambda: rope.multimodal_positions(VID, "lumos"), r"scheme.*allowed.*hope.*mmrope"),
    (lambda: rope.multimodal_positions(VID, "hope", temporal_stride=2.0),
     r"option.*temporal_stride.*allowed.*temporal_scale"),
    (lambda: rope.multimodal_positions(VID, "hope", temporal_scale=[1.0, 2.0]),
     r"temporal_scale.*2 values.*1 Image/Video"),
    (lambda: rope.multimodal_positions(VID, "hope", temporal_scale=0.0), r"temporal_scale.*posit"),
    (lambda: rope.multimodal_positions(VID, "hope", temporal_scale="fast"), r"temporal_scale"),
    (lambda: rope.multimodal_positions(VID, "ilrope", position_scale=(1, 1, 1)),
     r"option.*position_scale.*allowed.*temporal_stride"),
    (lambda: rope.multimodal_positions(VID, "omnirope", temporal_stride=0.0),
     r"temporal_stride.*positive"),
    (lambda: rope.multimodal_positions(VID, "mmrope", position_scale=(4, 8)),
     r"position_scale.*three positive"),
    (lambda: rope.multimodal_positions(VID, "mmrope", position_scale=(4, -8, 8)),
     r"position_scale.*three positive"),
    (lambda: rope.multimodal_positions(VID, "mmrope", seconds_per_grid=1.0),
     r"option.*seconds_per_grid.*allowed.*position_scale"),
    (lambda: rope.multimodal_positions(VID, "mrope", time_rounding="round"),
     r"time_rounding.*'float', 'int_seconds'"),
    (lambda: rope.multimodal_positions(VID, "mrope", seconds_per_grid=1.0, tokens_per_second=0),
     r"tokens_per_second.*positive"),
    (lambda: rope.multimodal_positions(VID, "mrope", seconds_per_grid=-0.5),
     r"seconds_per_grid.*positive"),
    (lambda: rope.multimodal_positions(VID, "mrope", seconds_per_grid=[0.5, 1.0]),
     r"seconds_per_grid.*2 values.*1 Video"),
    (lambda: rope.multimodal_positions(VID, "mrope", seconds_per_grid=1.0, temporal_stride=2.0),
     r"seconds_per_grid.*temporal_stride"),
    # frequency tables
    (lambda: rope.freqs_videorope(64, sections=(8, 12, 12), allocation="paper"),
     r"allocation.*'original', 'repo'"),
    (lambda: rope.freqs_hope(64, sections=(8, 12, 12), allocation="paper"),
     r"allocation.*'original', 'repo'"),
    (lambda: rope.freqs_hope(64), r"sections.*sum to head_dim/2 = 32"),
    (lambda: rope.freqs_mmrope(64, pattern=(0, 1, 3)), r"pattern.*0 \(t\), 1 \(h\), 2 \(w\)"),
    (lambda: rope.freqs_mmrope(64, pattern=()), r"pattern"),
    (lambda: rope.freqs_cyclic(63), r"head_dim"),
    (lambda: rope.inv_freq(64, 1e6, log_scale=0.0), r"log_scale.*positive"),
    # GRAPE
    (lambda: rope.init_grape(KEY, 32, "canonical"), r"mode.*'axis', 'mixed', 'block_mixed'"),
    (lambda: rope.grape_plane_freqs(32, 1e6, "planes"), r"mode.*'axis', 'mixed', 'block_mixed'"),
    (lambda: rope.init_grape(KEY, 32, "mixed", num_planes=17), r"num_planes.*head_dim/2 = 16"),
    (lambda: rope.init_grape(KEY, 32, "axis", num_planes=0), r"num_planes.*positive"),
    (lambda: rope.init_grape(KEY, 32, "block_mixed", block_size=12), r"head_dim.*block_size`=12"),
    (lambda: rope.init_grape(KEY, 32, "block_mixed", planes_per_block=9),
     r"planes_per_block.*\[1, block_size/2 = 8\]"),
    (lambda: rope.grape_plane_freqs(32, 1e6, "mixed", log_scale=-1.0), r"log_scale"),
    (lambda: rope.grape_rotate(X, POS, MIXED, PF, mode="cayley"),
     r"mode.*'axis', 'mixed', 'block_mixed'"),
    (lambda: rope.grape_rotate(X, POS, MIXED, PF, mode="axis"), r"params.*keys.*'h', 't', 'w'"),
    (lambda: rope.grape_rotate(X, POS, rope.init_grape(None, 32, "axis"), PF, mode="mixed"),
     r"params.*keys.*'a', 'axis_weight', 'b'"),
    (lambda: rope.grape_rotate(X, POS, MIXED, PF[:8], mode="mixed"), r"plane_freqs.*\(16,\)"),
    (lambda: rope.grape_rotate(X, POS[:, :2], MIXED, PF, mode="mixed"), r"positions.*\[\.\.\., 4, 3\]"),
    (lambda: rope.grape_rotate(X[..., :16], POS, MIXED, PF, mode="mixed"),
     r"planes act on 32 channels.*head_dim 16"),
    (lambda: rope.grape_rotate(X, POS, dict(MIXED, axis_weight=jnp.zeros((16, 2))), PF,
                               mode="mixed"), r"params.*axis_weight"),
    (lambda: rope.grape_rotate(X, POS, [MIXED], PF, mode="mixed"), r"params.*dict"),
]


@pytest.mark.parametrize("fn,match", CASES, ids=[str(i) for i in range(len(CASES))])
def test_value_errors(fn, match):
  with pytest.raises(ValueError, match=match):
    fn()
