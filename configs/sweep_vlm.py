r"""The VLM sweep: every rotary scheme of configs/vlm_*.py x seeds.

  # Locally, one run after another (re-running skips finished runs: each one resumes):
  python scripts/launch_sweep.py --sweep=configs/sweep_vlm.py:cpu,seeds=1 --workdir_root=runs/vlm
  # Evaluate every run on the four conditions (a temporary compilation cache lets the seeds of
  # a scheme reuse its compiled programs: --compilation_cache), then build the table + plot:
  python -m tasks.vlm_eval \
      --workdirs=$(ls -d runs/vlm/*/seed* | paste -sd,) --out=runs/vlm/eval
  python scripts/vlm_results.py --eval=runs/vlm/eval.json --out=docs/results/vlm
  # On a TPU pod (copy, install jax[tpu], start detached on every worker; README "Train on
  # a TPU pod"; one run at a time on the whole slice):
  python scripts/launch_sweep.py --sweep=configs/sweep_vlm.py --workdir_root=gs://bucket/vlm \
      --mode=tpu --tpu_name=my-v4-8 --zone=us-central2-b --data_dir=gs://bucket/tfds

Arguments: the mode of every run (smoke | cpu; none = the accelerator-sized config),
seeds=N (default 3), schemes="a+b+c" (default: all of vlm_common.SCHEMES).
Runs are named "<scheme>/seed<s>". On 2 CPU cores: smoke ~1-2 min per run; cpu ~5 min per run
with two shards side by side (`--shard=0/2` and `1/2`, one per core): the 45 runs of
`:cpu` (15 schemes x 3 seeds) took ~2 h, their evaluation ~15 min (docs/results/vlm.md).
"""
from configs import common
from configs import vlm_common


def get_sweep(arg: str | None = None) -> list[dict]:
  """The runs: [{"name": "<scheme>/seed<s>", "config": "configs/vlm_x.py[:mode]",
  "overrides": {"seed": s}}], schemes in vlm_common.SCHEMES order."""
  arg = common.parse_arg(arg, smoke=False, cpu=False, seeds=3, schemes="")
  modes = [m for m in vlm_common.MODES if arg[m]]
  if len(modes) > 1:
    raise ValueError(f"sweep arguments {modes} exclude each other.")
  if arg.seeds < 1:
    raise ValueError(f"sweep argument seeds={arg.seeds} must be >= 1.")
  schemes = [s for s in arg.schemes.split("+") if s] or list(vlm_common.SCHEMES)
  unknown = [s for s in schemes if s not in vlm_common.SCHEMES]
  if unknown:
    raise ValueError(f"sweep argument schemes: unknown {unknown}; allowed: "
                     f"{', '.join(vlm_common.SCHEMES)}.")
  suffix = f":{modes[0]}" if modes else ""
  return [{"name": f"{scheme}/seed{seed}", "config": f"configs/vlm_{scheme}.py{suffix}",
           "overrides": {"seed": seed}}
          for scheme in schemes for seed in range(arg.seeds)]
