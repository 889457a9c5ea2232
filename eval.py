r"""Evaluates trained runs: top-1 at several test resolutions (ViT) or the VLM conditions.

  python eval.py --workdirs=/tmp/runs/spherical_smoke
  python eval.py --workdirs=/tmp/runs/axial,/tmp/runs/spherical --resolutions=16,24,32,48,64 \
      --output=/tmp/runs/extrapolation

Every workdir is validated first (config.json, task, resolutions, a readable checkpoint):
if one is bad, eval.py names it and evaluates none. Then for each workdir: restore its best
checkpoint (--checkpoint=best; or "latest", or a step number; a damaged checkpoint is skipped
with a warning, falling back to the newest intact one for best / latest), and evaluate the
test split resized + center-cropped to every resolution (the papers' protocol: the model is NOT
fine-tuned; rotary positions extrapolate, APEs are interpolated).

Test-time options (they change no parameter, so a trained checkpoint evaluates under them;
both are recorded per run in the JSON and appended to the label, e.g. "axial+yarn"):
  --rope_scaling=none|linear|ntk|ntk_by_parts|yarn  FiT's VisionNTK / VisionYaRN frequency
      scaling beyond the training grid (per axis s = max(test grid / training grid, 1), YaRN
      with its attention amplitude on the patch tokens): model.rope_scaling, for encodings
      with a fixed ladder over integer positions (axial, prope, string_cayley; eva02 with
      --positions=index, FiT's own setting).
  --positions=index_interp  EVA-02's interpolation: integer positions mapped onto the
      training grid's range (i * n_train / n), for encodings with integer positions (axial,
      mixed, string_*, prope; eva02 does it natively); --positions=index turns eva02's
      interpolation off. Sets model.position_scale.
An encoding an option does not apply to is refused before anything is evaluated, with the
encodings that accept it.

Test protocol (--protocol, recorded per run and in "options"): "resize" (default; the test
image rescaled to each size, the object scales with the grid) or "canvas" (the image at its
training size placed at a seeded random offset, fixed per example, on a blank canvas of each
size: the object keeps its size and only the grid grows; sizes below the training size are
not defined, and are dropped from the default --resolutions).

  python eval.py --workdirs=/tmp/runs/axial --rope_scaling=yarn --output=/tmp/runs/axial_yarn
  python eval.py --workdirs=/tmp/runs/eva02 --positions=index --rope_scaling=yarn \
      --output=/tmp/runs/eva02_fit_yarn

Runs are labelled from their config (the encoding, trainer.workdir.run_label, and the seed;
--labels overrides) and runs differing only in the seed form one group: mean and standard
deviation over seeds (error bars in the plot). A run whose checkpoint is before the end of its
schedule is flagged "unfinished" (a * in the table, "finished": false in the JSON).

Writes OUTPUT.json ("runs": every number; "groups": mean / std over seeds) and OUTPUT.png
(accuracy against resolution, one line per group, a dotted line at each training resolution)
and prints a table. OUTPUT defaults to WORKDIR/resolution for a single workdir; give --output
for several.

Workdirs of the vision-language task (config.task == "vlm") are handed to tasks/vlm_eval.py:
exact match per question type under four conditions, PTD, a JSON report and PNG plots.
"""
import json
import logging as pylogging
import math
import os
import sys

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_list("workdirs", None, "Training workdirs to evaluate (comma-separated).")
flags.DEFINE_list("resolutions", None, "Test image sizes in pixels (default: 0.5x..2x the "
                  "training size in steps of 0.25x, rounded to multiples of the patch).")
flags.DEFINE_list("labels", None, "Labels, one per workdir (default: from each config: "
                  "encoding or scheme; runs with the same label are seeds of one group).")
flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.")
flags.DEFINE_string("output", None, "Output path without extension (writes .json and .png).")
flags.DEFINE_integer("batch_size", None, "Global eval batch size (default: the run's).",
                     lower_bound=1)
flags.DEFINE_integer("num_examples", None, "Image classification: evaluate the first N test "
                     "images at every size (data.max_eval_examples; default: the run's, all). "
                     "VLM runs: questions per condition (default: the run's "
                     "data.num_eval_examples).", lower_bound=1)
flags.DEFINE_enum("rope_scaling", "none", ["none", "linear", "ntk", "ntk_by_parts", "yarn"],
                  "Test-time frequency scaling beyond the training grid (model.rope_scaling).")
flags.DEFINE_enum("positions", None, ["index", "index_interp"],
                  "Test-time position convention of integer-position encodings "
                  "(model.position_scale); default: the run's own.")
flags.DEFINE_enum("protocol", "resize", ["resize", "canvas"],
                  "Test images: 'resize' (rescaled to each size) or 'canvas' (training-size "
                  "image at a seeded random offset on a blank canvas of each size).")
flags.DEFINE_string("compilation_cache", "auto", "Persistent XLA compilation cache: 'auto' (a "
                    "temporary one when several workdirs are given and JAX_COMPILATION_CACHE_DIR "
                    "is unset: runs of one model, e.g. seeds, compile once), 'off', or a "
                    "directory to keep (trainer/compile_cache.py).")
flags.mark_flags_as_required(["workdirs"])
FLAGS = flags.FLAGS

DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def default_resolutions(train_size: int, patch: int) -> list[int]:
  """Sizes f * train_size for f in DEFAULT_FACTORS, rounded to positive multiples of patch."""
  sizes = {max(patch, int(round(f * train_size / patch)) * patch) for f in DEFAULT_FACTORS}
  return sorted(sizes)


def _patch_size(config) -> int:
  from models import vit  # pylint: disable=g-import-not-at-top
  return vit.parse_variant(config.model.variant)[1]


def test_time_config(config, *, rope_scaling: str = "none", positions: str | None = None,
                     protocol: str = "resize"):
  """The run's config under the test-time options (a new, unlocked ConfigDict).

  `rope_scaling` sets model.rope_scaling (the model refuses encodings without a scalable
  ladder); `positions` sets model.position_scale, only for encodings whose own positions are
  integers (`index` / `index_interp`): any other convention would mean a different model;
  `protocol` sets data.eval_protocol. ValueError naming the option and the encodings that
  accept it.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from models import vit_encodings  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.eval_protocol = protocol
  if rope_scaling != "none":
    config.model.rope_scaling = rope_scaling
  if positions is not None:
    name = config.model.get("encoding") or config.model.get("posenc") or "none"
    entry = vit_encodings.ENCODINGS.get(name)
    if entry.scale not in vit_encodings.INTEGER_SCALES:
      accept = [n for n, e in vit_encodings.ENCODINGS.items()
                if e.scale in vit_encodings.INTEGER_SCALES]
      raise ValueError(f"--positions={positions}: encoding={name!r} does not "
                       f"use integer positions; encodings that accept it: {accept}.")
    config.model.position_scale = positions
  return config


def test_time_suffix(rope_scaling: str = "none", positions: str | None = None) -> str:
  """What a label gets for the test-time options: "", "+yarn", "+index_interp", ..."""
  return "".join(f"+{v}" for v in (positions, rope_scaling) if v not in (None, "none"))


def prepare_run(workdir: str, resolutions: list[int] | None, checkpoint: str,
                batch_size: int | None, *, rope_scaling: str = "none",
                positions: str | None = None, protocol: str = "resize",
                num_examples: int | None = None) -> dict:
  """Validates one workdir without evaluating it; ValueError naming the workdir and problem.

  `rope_scaling`, `positions`, `protocol`: the test-time options (`test_time_config`; the
  default resolutions under "canvas" are those >= the training size). `num_examples`: only
  the first N test images (data.max_eval_examples).
  Returns what `evaluate_run` needs: config, setup, checkpoint candidates, ...
  """
  import tasks  # pylint: disable=g-import-not-at-top
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top

  from trainer import files  # pylint: disable=g-import-not-at-top
  if not files.path(workdir).is_dir():
    raise ValueError(f"{workdir}: no such directory.")
  config = loop.read_config(workdir)
  if config.get("task") != "classification":
    raise ValueError(f"{workdir}: task {config.get('task')!r}; eval.py evaluates classification "
                     "runs here (vlm runs: all workdirs of one command must be vlm runs).")
  train_size = int(config.data.image_size)
  try:
    sizes = resolutions or [s for s in default_resolutions(train_size, _patch_size(config))
                            if protocol != "canvas" or s >= train_size]
    config = test_time_config(config, rope_scaling=rope_scaling, positions=positions,
                              protocol=protocol)
    config.eval.image_sizes = tuple(sizes)
    if batch_size:
      config.eval.batch_size = batch_size
    if num_examples is not None:
      if num_examples < 1:
        raise ValueError(f"--num_examples={num_examples}: must be >= 1.")
      config.data.max_eval_examples = num_examples
    config.lock()
    # Validates every size against the model (patch multiple, ...); the eval.py picks the task.
    setup = loop.build(config, task=tasks.get_task(config))
  except ValueError as e:
    raise ValueError(f"{workdir}: {e}") from None
  checkpoints = loop.open_checkpoints(config, workdir, read_only=True)
  try:
    step = checkpoint_lib.select_step(checkpoints, checkpoint, workdir)
    steps = checkpoints.all_steps()
  finally:
    checkpoints.close()
  # Newest first: the selected step, then (for best / latest) older ones if it is damaged.
  candidates = [step] + ([s for s in sorted(steps, reverse=True) if s != step]
                         if checkpoint in ("best", "latest") else [])
  return {"workdir": workdir, "config": config, "setup": setup, "sizes": sizes,
          "train_size": train_size, "candidates": candidates,
          "total_steps": setup.lengths["total"]}


def evaluate_run(prepared: dict) -> dict:
  """Restores one prepared run (`prepare_run`) and evaluates it at every resolution."""
  from tasks import classification  # pylint: disable=g-import-not-at-top
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  from trainer import files  # pylint: disable=g-import-not-at-top
  from trainer import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  workdir, config, setup = prepared["workdir"], prepared["config"], prepared["setup"]
  sizes, train_size = prepared["sizes"], prepared["train_size"]
  candidates = list(prepared["candidates"])
  checkpoints, step, state = checkpoint_lib.restore_newest_intact(
      lambda: loop.open_checkpoints(config, workdir, read_only=True),
      loop.abstract_state(setup, config.seed), move_damaged=False,
      steps=list(reversed(candidates)))
  checkpoints.close()
  if step is None:
    raise ValueError(f"{workdir}: no readable checkpoint among steps {sorted(candidates)}.")
  metrics = loop.evaluate(setup.task, state["params"], loop.make_eval_step(setup.task, setup.mesh),
                          setup.mesh)
  names = {s: classification.eval_set_name(s, train_size) for s in sizes}
  total = int(prepared["total_steps"])
  return {
      "workdir": files.absolute(workdir), "step": int(step), "total_steps": total,
      "finished": int(step) >= total, "encoding": workdir_lib.run_label(config),
      "seed": workdir_lib.run_seed(config), "dataset": config.data.name,
      "train_image_size": train_size, "resolutions": list(sizes),
      # The test-time options (None: the run's own position convention).
      "rope_scaling": config.model.get("rope_scaling") or "none",
      "positions": config.model.get("position_scale"),
      "protocol": config.data.eval_protocol,
      "num_examples": int(metrics[f"{names[sizes[0]]}/count"]),  # Test images per size.
      "accuracy": {str(s): metrics[f"{names[s]}/accuracy"] for s in sizes},
      "loss": {str(s): metrics[f"{names[s]}/loss"] for s in sizes},
  }


def group_runs(runs: list[dict]) -> list[dict]:
  """Runs with the same label (seeds of one setting): mean and sample std per resolution."""
  groups: dict[str, list[dict]] = {}
  for r in runs:
    groups.setdefault(r["label"], []).append(r)
  out = []
  for label, members in groups.items():
    sizes = sorted({int(s) for r in members for s in r["accuracy"]})
    mean, std = {}, {}
    for s in sizes:
      values = [r["accuracy"][str(s)] for r in members if str(s) in r["accuracy"]]
      m = sum(values) / len(values)
      mean[str(s)] = m
      std[str(s)] = (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
                     if len(values) > 1 else 0.0)
    out.append({"label": label, "n": len(members), "seeds": [r["seed"] for r in members],
                "workdirs": [r["workdir"] for r in members],
                "unfinished": [r["workdir"] for r in members if not r["finished"]],
                "train_image_size": members[0]["train_image_size"],
                "accuracy_mean": mean, "accuracy_std": std})
  return out


def table(runs: list[dict], groups: list[dict]) -> str:
  """Fixed-width text: one row per run, then mean +- std per group of seeds (top-1 %)."""
  sizes = sorted({int(s) for r in runs for s in r["accuracy"]})
  names = [f"{r['label']} seed{r['seed']}" + ("*" if not r["finished"] else "") for r in runs]
  group_names = [f"{g['label']} (n={g['n']})" for g in groups if g["n"] > 1]
  width = max(len(n) for n in names + group_names + ["run"])
  lines = [f"{'run':<{width}} " + " ".join(f"{s:>13d}" for s in sizes)]
  for name, r in zip(names, runs):
    cells = [f"{100 * r['accuracy'][str(s)]:13.2f}" if str(s) in r["accuracy"] else " " * 13
             for s in sizes]
    lines.append(f"{name:<{width}} " + " ".join(cells))
  if group_names:
    lines.append("mean +- std over seeds:")
    for g, name in zip([g for g in groups if g["n"] > 1], group_names):
      cells = [f"{100 * g['accuracy_mean'][str(s)]:6.2f} +-{100 * g['accuracy_std'][str(s)]:5.2f}"
               if str(s) in g["accuracy_mean"] else " " * 13 for s in sizes]
      lines.append(f"{name:<{width}} " + " ".join(cells))
  unfinished = [r for r in runs if not r["finished"]]
  if unfinished:
    lines.append("* unfinished: " + "; ".join(
        f"{r['workdir']} at step {r['step']} of {r['total_steps']}" for r in unfinished))
  return "\n".join(lines)


def plot(groups: list[dict], path: str, protocol: str = "resize") -> None:
  """Accuracy (%) against test resolution, one line per group (error bars: std over seeds)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8.0, 4.2))
  colors = plt.get_cmap("tab20").colors  # 20 distinct colours: one per encoding of a sweep.
  for i, g in enumerate(groups):
    sizes = sorted(int(s) for s in g["accuracy_mean"])
    label = g["label"] + (f" (n={g['n']})" if g["n"] > 1 else "") + (
        " [unfinished]" if g["unfinished"] else "")
    container = ax.errorbar(
        sizes, [100 * g["accuracy_mean"][str(s)] for s in sizes],
        yerr=[100 * g["accuracy_std"][str(s)] for s in sizes] if g["n"] > 1 else None,
        marker="o", capsize=3, label=label, color=colors[i % len(colors)],
        linestyle="-" if i < len(colors) else "--")
    ax.axvline(g["train_image_size"], color=container.lines[0].get_color(), linestyle=":",
               alpha=0.6)
  ax.set_xlabel("test resolution (pixels); dotted: training resolution")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title(f"Resolution extrapolation, {protocol} protocol (mean +- std over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the lines
  fig.tight_layout()
  from etils import epath  # pylint: disable=g-import-not-at-top
  with epath.Path(path).open("wb") as f:  # Local or gs:// (a run's workdir).
    fig.savefig(f, format="png", dpi=120)
  plt.close(fig)


def code_commit() -> str | None:
  """The commit of the code evaluating (git HEAD, "+dirty" with uncommitted changes), or None
  outside a git checkout: result tables state the commit they were made at."""
  import subprocess  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None
  return head + ("+dirty" if dirty else "")


def write_report(runs: list[dict], output: str, options: dict) -> list[dict]:
  """Writes OUTPUT.json ({"options": the test-time options, "commit": `code_commit()`, "runs",
  "groups"}) and OUTPUT.png; returns the groups."""
  groups = group_runs(runs)
  from trainer import files  # pylint: disable=g-import-not-at-top
  files.write_atomic(files.absolute(output) + ".json",  # Creates the directory (or gs:// ok).
                     json.dumps({"options": options, "commit": code_commit(), "runs": runs,
                                 "groups": groups}, indent=2))
  plot(groups, output + ".png", options.get("protocol", "resize"))
  return groups


def _task_of(workdir: str) -> str:
  from trainer import loop  # pylint: disable=g-import-not-at-top
  return loop.read_config(workdir).task


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's INFO records and its read-only notices (eval.py never writes)."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if "/orbax/" not in record.pathname:
      return True
    message = record.getMessage()
    return record.levelno >= pylogging.WARNING and "read only" not in message \
        and "read_only" not in message


def _report_unusable(errors: list[str], total: int) -> int:
  for e in errors:
    print(f"eval.py: {e}", file=sys.stderr)
  print(f"eval.py: {len(errors)} of {total} workdirs are not usable; nothing was evaluated.",
        file=sys.stderr)
  return 1


def main(argv) -> int:
  logging.get_absl_handler().addFilter(_QuietOrbax())
  workdirs = FLAGS.workdirs
  # Vision-language runs have their own protocol (four conditions, exact match, PTD): hand the
  # whole command line (same flag names) to it when every workdir is one.
  tasks_of, errors = {}, []
  for workdir in workdirs:
    try:
      tasks_of[workdir] = _task_of(workdir)
    except ValueError as e:  # Not a training workdir.
      errors.append(str(e))
  if errors:
    return _report_unusable(errors, len(workdirs))
  if set(tasks_of.values()) == {"vlm"}:
    from tasks import vlm_eval  # pylint: disable=g-import-not-at-top
    return vlm_eval.main(sys.argv)
  del argv
  if FLAGS.labels and len(FLAGS.labels) != len(workdirs):
    raise app.UsageError(f"--labels has {len(FLAGS.labels)} entries for {len(workdirs)} workdirs.")
  if FLAGS.output is None and len(workdirs) > 1:
    raise app.UsageError("--output is required with several workdirs.")
  if FLAGS.checkpoint not in ("best", "latest") and not FLAGS.checkpoint.isdigit():
    raise app.UsageError(f"--checkpoint={FLAGS.checkpoint!r}: use best, latest or a step.")
  try:
    resolutions = [int(s) for s in FLAGS.resolutions] if FLAGS.resolutions else None
  except ValueError:
    raise app.UsageError(f"--resolutions={FLAGS.resolutions}: integers expected.") from None
  output = FLAGS.output or os.path.join(workdirs[0], "resolution")
  # Validate every workdir before evaluating any.
  prepared, errors = [], []
  for workdir in workdirs:
    try:
      prepared.append(prepare_run(workdir, resolutions, FLAGS.checkpoint, FLAGS.batch_size,
                                  rope_scaling=FLAGS.rope_scaling, positions=FLAGS.positions,
                                  protocol=FLAGS.protocol, num_examples=FLAGS.num_examples))
    except ValueError as e:
      errors.append(str(e))
  if errors:
    return _report_unusable(errors, len(workdirs))
  from trainer import compile_cache  # pylint: disable=g-import-not-at-top
  runs = []
  with compile_cache.for_runs(FLAGS.compilation_cache, len(prepared)):
    for i, p in enumerate(prepared):
      try:
        run = evaluate_run(p)
      except ValueError as e:
        print(f"eval.py: {e}", file=sys.stderr)
        return 1
      run["label"] = (FLAGS.labels[i] if FLAGS.labels else run["encoding"]) + test_time_suffix(
          FLAGS.rope_scaling, FLAGS.positions)
      runs.append(run)
      logging.info("%s seed %s (step %d of %d): %s", run["label"], run["seed"], run["step"],
                   run["total_steps"], run["accuracy"])
  groups = write_report(runs, output, {"rope_scaling": FLAGS.rope_scaling,
                                       "positions": FLAGS.positions, "protocol": FLAGS.protocol,
                                       "num_examples": FLAGS.num_examples})
  print(table(runs, groups))
  unfinished = [r for r in runs if not r["finished"]]
  if unfinished:
    print(f"eval.py: warning: {len(unfinished)} run(s) unfinished (marked *).", file=sys.stderr)
  print(f"eval.py: wrote {output}.json and {output}.png")
  return 0


if __name__ == "__main__":
  app.run(main)
