r"""The ViT sweep: every encoding of configs/vit_*.py x seeds (the paper's Table 2 protocol).

  # Locally, one run after another (re-running skips finished runs: each one resumes):
  python scripts/launch_sweep.py --sweep=configs/sweep_vit.py:smoke --workdir_root=/tmp/sweep
  # On a TPU pod (copy, install jax[tpu], start detached on every worker; README "Train on
  # a TPU pod"; one run at a time on the whole slice):
  python scripts/launch_sweep.py --sweep=configs/sweep_vit.py --workdir_root=gs://bucket/c100 \
      --mode=tpu --tpu_name=my-v4-32 --zone=us-central2-b --data_dir=gs://bucket/tfds
  # Then compare the runs across test resolutions:
  python eval.py --workdirs=$(ls -d /tmp/sweep/*/* | paste -sd,) --output=/tmp/sweep/resolution

Arguments: the mode of every run (smoke | fmnist | imagenet; none = the CIFAR-100 recipe),
seeds=N (default 3, the paper's), encodings="a+b+c" (names of configs/vit_<name>.py; default:
all of them, vit_common.config_names()). The smoke sweep (14 configs x 3 seeds) takes ~1 h on
2 CPU cores.
"""
from configs import common
from configs import vit_common


def get_sweep(arg: str | None = None) -> list[dict]:
  """The runs: [{"name": "<encoding>/seed<s>", "config": "configs/vit_x.py[:mode]",
  "overrides": {"seed": s}}], encodings in vit_common.config_names() order."""
  arg = common.parse_arg(arg, smoke=False, fmnist=False, imagenet=False, seeds=3,
                         encodings="")
  modes = [m for m in vit_common.MODES if arg[m]]
  if len(modes) > 1:
    raise ValueError(f"sweep arguments {modes} exclude each other.")
  if arg.seeds < 1:
    raise ValueError(f"sweep argument seeds={arg.seeds} must be >= 1.")
  names = vit_common.config_names()
  encodings = [e for e in arg.encodings.split("+") if e] or list(names)
  unknown = [e for e in encodings if e not in names]
  if unknown:
    raise ValueError(f"sweep argument encodings: unknown {unknown}; allowed: "
                     f"{', '.join(names)}.")
  suffix = f":{modes[0]}" if modes else ""
  return [{"name": f"{encoding}/seed{seed}", "config": f"configs/vit_{encoding}.py{suffix}",
           "overrides": {"seed": seed}}
          for encoding in encodings for seed in range(arg.seeds)]
