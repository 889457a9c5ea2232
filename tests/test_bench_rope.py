"""benchmarks/bench_rope.py's round-robin mode and common.paired_rounds (tiny shapes: the
command line and the bookkeeping, not the timings)."""
import jax
import jax.numpy as jnp
import pytest

from benchmarks import bench_rope
from benchmarks import common


def test_paired_rounds_times_every_entry_once_per_round_in_rotating_order():
  calls = []

  def fn(name):
    def run(x):
      calls.append(name)
      return x + 1
    return run

  x = jnp.zeros(3)
  times = common.paired_rounds({n: (fn(n), (x,)) for n in "abc"}, rounds=4, inner=2, warmup=0)
  assert {n: len(t) for n, t in times.items()} == {"a": 4, "b": 4, "c": 4}
  assert all(t > 0 for ts in times.values() for t in ts)
  timed = calls[3:]                     # after one untimed call each (warmup=0: compile only)
  firsts = [timed[6 * r] for r in range(4)]   # 3 entries x inner 2 per round
  assert firsts == ["a", "b", "c", "a"]


def test_rounds_mode_prints_every_variant_against_x_times_c(capsys):
  bench_rope.main(["--shape", "2,16,3,8", "--rounds", "2", "--only", "1d,qwen35 (partial)"])
  out = capsys.readouterr().out
  rows = {line.split()[0]: line for line in out.splitlines()
          if line.startswith(("x * c", "1d", "qwen35"))}
  assert set(rows) == {"x", "1d", "qwen35"}
  assert "(2 rounds, round-robin" in out
  assert float(rows["x"].split()[4]) == 1.0   # x * c against itself


@pytest.mark.parametrize("argv, match", [
    (["--only", "nope"], r"--only.*nope.*allowed.*1d"),
    (["--rounds", "-1"], r"--rounds"),
    (["--rounds", "2", "--backward"], r"--rounds.*forward only"),
])
def test_bad_arguments_name_the_option(argv, match):
  with pytest.raises(ValueError, match=match):
    bench_rope.main(["--shape", "2,16,3,8"] + argv)
