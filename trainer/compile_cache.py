"""A persistent XLA compilation cache for one evaluation of several runs.

    with compile_cache.for_runs(FLAGS.compilation_cache, len(workdirs)) as cache_dir:
      ...  # evaluate every run

The runs of a sweep that share a model (its seeds, above all) compile the same programs at
every test size. Each run builds its own jitted functions (its own task and closures), so
jax's in-memory cache cannot serve the next run, but its persistent cache, keyed by the
program's HLO, the compile options and the jax version, can: on 2 CPU cores the second of two
`vit_mixed.py:smoke` workdirs then evaluates several times faster, with the same numbers
(tests/test_compile_cache.py checks the cache hit).

Settings: "auto" (a temporary cache, removed afterwards, when there are several runs and the
user has not set `JAX_COMPILATION_CACHE_DIR` / `jax_compilation_cache_dir`), "off", or a
directory to keep (and to reuse in the next evaluation). Every program is cached, however
short its compile (`jax_persistent_cache_min_compile_time_secs = 0`): eval programs compile in
well under jax's default threshold of 1 s on CPU, and each is reused.
"""
import contextlib
import tempfile
from typing import Iterator, Optional

import jax
from jax.experimental.compilation_cache import compilation_cache


@contextlib.contextmanager
def for_runs(setting: str, num_runs: int) -> Iterator[Optional[str]]:
  """Enables the cache for the body; yields its directory, or None when it stays off (or the
  user's own `jax_compilation_cache_dir` is in force). Restores jax's settings on exit."""
  if not setting:
    raise ValueError("compilation_cache: give 'auto', 'off' or a directory.")
  user_dir = jax.config.jax_compilation_cache_dir
  if setting == "off" or user_dir or (setting == "auto" and num_runs < 2):
    yield user_dir if setting != "off" else None
    return
  old_time = jax.config.jax_persistent_cache_min_compile_time_secs
  with contextlib.ExitStack() as stack:
    directory = (stack.enter_context(tempfile.TemporaryDirectory(prefix="xla_cache_"))
                 if setting == "auto" else setting)
    # jax decides once per process, at its first compile, whether the cache is in use; a
    # reset makes it decide again with the directory set.
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    try:
      yield directory
    finally:
      jax.config.update("jax_compilation_cache_dir", None)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", old_time)
      compilation_cache.reset_cache()   # the next use re-reads the (now unset) directory
