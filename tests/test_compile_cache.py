"""trainer/compile_cache.py: when the persistent cache is on, and that it serves a second run."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainer import compile_cache


@pytest.fixture(autouse=True)
def _no_user_cache():
  before = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  assert jax.config.jax_compilation_cache_dir is None      # restored on exit
  jax.config.update("jax_compilation_cache_dir", before)


@pytest.mark.parametrize("setting, runs", [("auto", 1), ("off", 5)])
def test_stays_off_for_one_run_or_when_told(setting, runs):
  with compile_cache.for_runs(setting, runs) as d:
    assert d is None and jax.config.jax_compilation_cache_dir is None


def test_auto_uses_a_temporary_directory_for_several_runs_and_removes_it():
  time_before = jax.config.jax_persistent_cache_min_compile_time_secs
  with compile_cache.for_runs("auto", 2) as d:
    assert d and os.path.isdir(d) and jax.config.jax_compilation_cache_dir == d
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
  assert not os.path.exists(d)
  assert jax.config.jax_persistent_cache_min_compile_time_secs == time_before


def test_a_second_run_of_the_same_program_loads_it_from_the_cache(tmp_path):
  # Two distinct jitted functions (as two workdirs' eval steps are) with the same program: the
  # second is not compiled again but read from the directory the first one wrote.
  hits = []
  listener = lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None
  jax.monitoring.register_event_listener(listener)
  x = jnp.arange(12.0).reshape(3, 4)
  try:
    with compile_cache.for_runs(str(tmp_path), 2) as d:
      assert d == str(tmp_path)
      first = jax.jit(lambda v: jnp.tanh(v) @ v.T + 17.0)(x)
      assert os.listdir(d) and not hits, "the first compile wrote no cache entry"
      second = jax.jit(lambda v: jnp.tanh(v) @ v.T + 17.0)(x)
      assert len(hits) == 1                                 # loaded, not compiled
    # Off again after the block: the same program compiles without the cache.
    jax.jit(lambda v: jnp.tanh(v) @ v.T + 17.0)(x)
    assert len(hits) == 1
  finally:
    jax.monitoring.unregister_event_listener(listener)
  np.testing.assert_array_equal(first, second)
  assert os.listdir(tmp_path)                               # a named directory is kept


def test_the_users_own_cache_is_left_alone(tmp_path):
  jax.config.update("jax_compilation_cache_dir", str(tmp_path))
  try:
    with compile_cache.for_runs("auto", 3) as d:
      assert d == str(tmp_path) == jax.config.jax_compilation_cache_dir
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
  finally:
    jax.config.update("jax_compilation_cache_dir", None)


def test_an_empty_setting_is_an_error():
  with pytest.raises(ValueError, match="compilation_cache"):
    with compile_cache.for_runs("", 2):
      pass
