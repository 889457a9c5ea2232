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

`resolution` (with fmnist): issue 14's resolution-robustness study instead, the runs of
`STUDY` (13 trainings x seeds, DINOv3 with and without its augmentation) and, through
`get_evals`, eval.py under both protocols ("resize", "canvas") with the test-time variants of
`TEST_TIME` (EVA-02 interpolation and YaRN on trained checkpoints, no training of their own).
Its budget arguments: epochs=E (default 1: training.total_epochs, evaluated once at the end
at 28 px only) and examples=N (default 2000: eval.py --num_examples, the first N test
images at every size). On 2 CPU cores, two launchers pinned to one core each (--shard):
  for i in 0 1; do taskset -c $i python scripts/launch_sweep.py \
      --sweep=configs/sweep_vit.py:fmnist,resolution --workdir_root=/tmp/study \
      --shard=$i/2 --keep_going & done; wait     # 39 trainings
  for i in 0 1; do taskset -c $i python scripts/launch_sweep.py \
      --sweep=configs/sweep_vit.py:fmnist,resolution --workdir_root=/tmp/study \
      --stage=eval --shard=$i/2 --keep_going & done; wait  # /tmp/study/eval/<protocol>/*
  python scripts/vit_results.py --eval=/tmp/study/eval/resize,/tmp/study/eval/canvas \
      --out=docs/results/vit_fmnist_resolution.md --plot=docs/results/vit_fmnist_resolution.png
Cost (measured on Zen 3, 2 cores, tcmalloc, 2026-12-04): one 1-epoch training (469 steps of
128) ~3 min on one core (~400 images/s), the 39 trainings 70 min with two launchers; the 32
eval.py commands (16 per protocol, 3 checkpoints each, 2000 images at 7 or 5 sizes; mostly
compilation, ~1 min per checkpoint) 35 min. Results: README "ViT: resolution-robustness study".
`seeds=N` scales both; epochs=3,examples=10000 is the full :fmnist recipe (~3x longer).
"""
from configs import common
from configs import vit_common

# Issue 14's resolution study: run name -> (config name, extra config argument). Training
# runs; every one is also evaluated as trained under both protocols.
STUDY = {
    "none": ("none", ""), "ape": ("ape", ""), "sincos": ("sincos", ""),
    "axial": ("axial", ""), "mixed": ("mixed", ""), "spherical": ("spherical", ""),
    "liere": ("liere", ""), "comrope_ld": ("comrope_ld", ""),
    "string_cayley": ("string_cayley", ""), "dinov3": ("dinov3", ""),
    "dinov3_noaug": ("dinov3", "augment=False"), "eva02": ("eva02", ""),
    "lookhere": ("lookhere", ""),
}
# Test-time variants: label -> (the study run whose checkpoints are evaluated, eval.py flags).
# "eva02" itself is EVA-02 interpolation (its positions are interpolated at every other
# grid); FiT's VisionYaRN is its table with integer positions and YaRN; rope-vit Axial, the
# encoding that collapses, gets YaRN and EVA-02's interpolation at test time.
TEST_TIME = {
    "eva02+index+yarn": ("eva02", {"positions": "index", "rope_scaling": "yarn"}),
    "axial+yarn": ("axial", {"rope_scaling": "yarn"}),
    "axial+index_interp": ("axial", {"positions": "index_interp"}),
}
PROTOCOLS = ("resize", "canvas")
TEST_SIZES = (16, 20, 28, 36, 40, 48, 56)   # pixels; trained at 28 (canvas: >= 28 only)


def get_sweep(arg: str | None = None) -> list[dict]:
  """The runs: [{"name": "<encoding>/seed<s>", "config": "configs/vit_x.py[:mode]",
  "overrides": {"seed": s}}], encodings in vit_common.config_names() order."""
  arg = _parse(arg)
  modes = [m for m in vit_common.MODES if arg[m]]
  if arg.resolution:
    budget = {"training.total_epochs": arg.epochs, "eval.every_epochs": arg.epochs,
              "eval.image_sizes": "()"}  # The resolutions are eval.py's, afterwards.
    return [{"name": f"{name}/seed{seed}",
             "config": f"configs/vit_{config}.py:fmnist" + (f",{extra}" if extra else ""),
             "overrides": {"seed": seed, **budget}}
            for name, (config, extra) in STUDY.items() for seed in range(arg.seeds)]
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


def _parse(arg: str | None):
  arg = common.parse_arg(arg, smoke=False, fmnist=False, imagenet=False, seeds=3,
                         encodings="", resolution=False, epochs=1.0, examples=2000)
  modes = [m for m in vit_common.MODES if arg[m]]
  if len(modes) > 1:
    raise ValueError(f"sweep arguments {modes} exclude each other.")
  if arg.seeds < 1:
    raise ValueError(f"sweep argument seeds={arg.seeds} must be >= 1.")
  if arg.resolution and (modes != ["fmnist"] or arg.encodings):
    raise ValueError("sweep argument resolution: the study is fixed (STUDY) and runs on "
                     "Fashion-MNIST; use it as 'fmnist,resolution[,seeds=N]'.")
  if not arg.resolution and (arg.epochs != 1.0 or arg.examples != 2000):
    raise ValueError("sweep arguments epochs / examples: only for the resolution study "
                     "('fmnist,resolution,epochs=E,examples=N').")
  if arg.epochs <= 0 or arg.examples < 1:
    raise ValueError(f"sweep arguments epochs={arg.epochs} (> 0) / examples={arg.examples} "
                     "(>= 1) of the resolution study: out of range.")
  return arg


def get_evals(arg: str | None = None) -> list[dict]:
  """The eval.py commands of the resolution study (`resolution`): [{"name":
  "<protocol>/<label>", "runs": [run names of get_sweep], "labels": [one per run], "flags":
  {eval.py flag: value}}], per protocol the study's runs as trained, then `TEST_TIME`.
  `scripts/launch_sweep.py --stage=eval` runs them, each writing WORKDIR_ROOT/eval/<name>."""
  arg = _parse(arg)
  if not arg.resolution:
    raise ValueError("get_evals: only the resolution study (argument 'fmnist,resolution') "
                     "defines its evaluations.")
  seeds = range(arg.seeds)
  settings = [(name, name, {}) for name in STUDY] + [
      (label, run, flags) for label, (run, flags) in TEST_TIME.items()]
  out = []
  for protocol in PROTOCOLS:
    sizes = [s for s in TEST_SIZES if protocol == "resize" or s >= 28]
    for label, run, flags in settings:
      out.append({"name": f"{protocol}/{label}",
                  # eval.py appends the test-time flags to the label (axial -> axial+yarn).
                  "runs": [f"{run}/seed{s}" for s in seeds], "labels": [run] * len(seeds),
                  "flags": dict(flags, protocol=protocol, num_examples=arg.examples,
                                resolutions=",".join(map(str, sizes)))})
  return out
