r"""Evaluation of trained VLM runs: exact match per question type under four conditions + PTD.

  python -m tasks.vlm_eval --workdir=runs/vlm/circle/seed0 --out=runs/vlm/circle/seed0/eval
  python -m tasks.vlm_eval --workdirs=runs/vlm/mrope/seed0,runs/vlm/circle/seed0 \
      --out=runs/vlm/eval [--checkpoint=best|latest|STEP] [--num_examples=512]

For each workdir: read its config.json, restore its best checkpoint (or --checkpoint), and run
the task's eval step (greedy decoding with the KV cache, tasks/vlm.py) on each condition of
`data.vlm_pipeline.eval_configs`:
  (a) as_trained     the training distribution,
  (b) larger_grid    64x64 images: an 8x8 scene grid / 8x8 visual tokens (training: 4x4),
  (c) longer_prefix  24-40 filler words before the image (training: 0-8),
  (d) multi_image    only two-image and two-frame video questions.
Per condition it reports exact-match accuracy (overall and per question type), teacher-forced
exact match (a consistency check: it equals greedy up to rounding), the answer loss, a
majority-answer baseline (the most frequent answer of each question type in that eval set),
and the PTD (Per-Token Distance, rope.ptd) of the scheme's position ids: for each image (each
frame of a video) of a sample, rope.ptd(ids of the sample's text tokens, ids of that image's
tokens); averaged over the images of a sample, then over the samples. Text tokens are all
valid non-image tokens (BOS, prefix, vision start/end, question, answer, EOS). The ids are
those the scheme's frequency table reads (`Scheme.position_columns`: the t column only for
the 1-D tables of vanilla and v2pe, all three for the others). For schemes with alternate ids
(circle_age), "ptd_alt" is the PTD of the alternate (M-RoPE) ids of its other layers.

Writes OUT.json (every number, every run, plus a per-scheme mean/std over seeds), OUT.png
(accuracy per scheme, one panel per condition) and OUT_types.png (accuracy per scheme and
question type, one heat map per condition), and prints a table. OUT defaults to
WORKDIR/vlm_eval for one workdir; give --out for several.

`main(argv)` takes a full argv (argv[0] = program name), so `eval.py` can hand its command line
over when a workdir's config.task is "vlm" (flag names match eval.py's: --workdirs, --output,
--labels, --checkpoint, --batch_size).
"""
import argparse
import collections
import json
import os
import sys
from typing import Sequence

import numpy as np

CONDITIONS = ("as_trained", "larger_grid", "longer_prefix", "multi_image")
CONDITION_TITLES = {
    "as_trained": "(a) as trained",
    "larger_grid": "(b) larger grid",
    "longer_prefix": "(c) longer text prefix",
    "multi_image": "(d) two images / video",
}


# ---------------------------------------------------------------------------------------------
# PTD and the majority baseline, from host batches.


class PtdMeter:
  """Mean over samples of the per-image PTD between text and image position ids.

  PTD depends only on a sample's ids and which tokens are visual, so it is memoised on them
  (a condition has few distinct layouts).
  """

  def __init__(self, image_token: int, tokens_per_image: int, columns: int):
    self.image_token = image_token
    self.tokens_per_image = tokens_per_image
    self.columns = columns
    self._cache = {}
    self.total = 0.0
    self.count = 0

  def sample_ptd(self, tokens: np.ndarray, positions: np.ndarray, valid: np.ndarray) -> float:
    """PTD of one sample: tokens [L], positions [L, 3], valid [L] (bool)."""
    import rope  # pylint: disable=g-import-not-at-top
    pos = positions[valid][:, :self.columns].astype(np.float32)
    is_image = tokens[valid] == self.image_token
    key = (pos.tobytes(), is_image.tobytes())
    if key not in self._cache:
      image_idx = np.flatnonzero(is_image)
      n = self.tokens_per_image
      if len(image_idx) == 0 or len(image_idx) % n:
        raise ValueError(f"a sample has {len(image_idx)} image tokens, not a positive multiple "
                         f"of {n} tokens per image.")
      text = pos[~is_image]
      per_image = [float(rope.ptd(text, pos[image_idx[k:k + n]]))
                   for k in range(0, len(image_idx), n)]
      self._cache[key] = float(np.mean(per_image))
    return self._cache[key]

  def add_batch(self, batch: dict, key: str = "positions") -> None:
    for b in np.flatnonzero(batch["question_type"] >= 0):
      self.total += self.sample_ptd(batch["tokens"][b], batch[key][b], batch["valid"][b])
      self.count += 1

  @property
  def value(self) -> float:
    return self.total / self.count if self.count else float("nan")


class MajorityBaseline:
  """Accuracy of answering every question of a type with that type's most frequent answer."""

  def __init__(self, type_names: dict[int, str]):
    self.type_names = type_names
    self.answers = collections.defaultdict(collections.Counter)

  def add_batch(self, batch: dict) -> None:
    for b in np.flatnonzero(batch["question_type"] >= 0):
      answer = tuple(batch["tokens"][b][batch["loss_mask"][b]].tolist())
      self.answers[int(batch["question_type"][b])][answer] += 1

  def result(self) -> dict:
    per_type = {self.type_names[t]: c.most_common(1)[0][1] / sum(c.values())
                for t, c in self.answers.items()}
    hits = sum(c.most_common(1)[0][1] for c in self.answers.values())
    total = sum(sum(c.values()) for c in self.answers.values())
    return {"accuracy": hits / total if total else float("nan"), "per_type": per_type}


# ---------------------------------------------------------------------------------------------
# One run.


def evaluate_run(workdir: str, *, checkpoint: str = "best", conditions: Sequence[str] = CONDITIONS,
                 num_examples: int | None = None, batch_size: int | None = None) -> dict:
  """Restores one VLM run and evaluates it on `conditions`; returns a JSON-able dict."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from data import spatial_scenes  # pylint: disable=g-import-not-at-top
  from data import tokenizer  # pylint: disable=g-import-not-at-top
  from models import vlm_schemes  # pylint: disable=g-import-not-at-top
  from tasks import vlm as vlm_task  # pylint: disable=g-import-not-at-top
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  from trainer import files  # pylint: disable=g-import-not-at-top
  from trainer import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  config = loop.read_config(workdir)
  if config.get("task") != "vlm":
    raise ValueError(f"{workdir}: config.task={config.get('task')!r}; tasks.vlm_eval "
                     "evaluates 'vlm' runs (eval.py evaluates classification runs).")
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval.conditions = tuple(conditions)
  if num_examples:
    config.data.num_eval_examples = int(num_examples)
  if batch_size:
    config.eval.batch_size = int(batch_size)
  config.lock()
  # loop.build validates the model against every condition (max_len, ...).
  setup = loop.build(config, task=tasks.get_task(config))
  task = setup.task
  checkpoints = loop.open_checkpoints(config, workdir, read_only=True)
  step = checkpoint_lib.select_step(checkpoints, checkpoint, workdir)
  state = checkpoints.restore(step, loop.abstract_state(setup, config.seed))
  checkpoints.close()
  params = state["params"]
  eval_step = loop.make_eval_step(task, setup.mesh)

  scheme = config.model.scheme
  entry = vlm_schemes.SCHEMES.get(scheme)
  columns = entry.position_columns(vlm_schemes.settings(config.model))
  has_alt = entry.alt_design is not None
  results = {}
  for name, batches in task.eval_sets().items():
    h, w = spatial_scenes.token_grid(task.eval_data[name])
    ptd = PtdMeter(tokenizer.IMAGE, h * w, columns)
    ptd_alt = PtdMeter(tokenizer.IMAGE, h * w, columns)
    majority = MajorityBaseline(task.question_types)
    sums = None
    for local in batches:
      out = eval_step(params, mesh_lib.global_batch(local, setup.mesh))
      sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
      ptd.add_batch(local)
      if has_alt:
        ptd_alt.add_batch(local, "positions_alt")
      majority.add_batch(local)
    sums = {k: float(v) for k, v in jax.device_get(sums).items()}
    count = sums["count"]
    per_type = vlm_task.per_type_accuracy(sums)
    results[name] = {
        "count": int(count),
        "accuracy": sums["accuracy"] / count,
        "tf_accuracy": sums["tf_accuracy"] / count,
        "loss": sums["loss"] / count,
        "per_type": per_type,
        "per_type_count": {k[2:]: int(v) for k, v in sums.items()
                           if k.startswith("n/") and v > 0},
        "majority_baseline": majority.result(),
        "ptd": ptd.value,
        **({"ptd_alt": ptd_alt.value} if has_alt else {}),
        "image_tokens": [h, w],
        "max_len": int(task.eval_data[name].max_len),
    }
  m = config.model
  return {
      "workdir": files.absolute(workdir), "step": int(step), "scheme": scheme,
      "seed": int(config.seed),
      "model": {"width": m.width, "depth": m.depth, "num_heads": m.num_heads,
                "num_kv_heads": m.num_kv_heads, "head_dim": m.head_dim, "theta": m.theta,
                "vision_depth": m.vision.depth},
      "training": {"batch_size": config.training.batch_size,
                   "total_steps": config.training.total_steps},
      "data": {"image_size": config.data.image_size, "grid_size": config.data.grid_size,
               "video_as": config.data.video_as,
               "prefix_len": [config.data.min_prefix_len, config.data.max_prefix_len]},
      "conditions": results,
  }


# ---------------------------------------------------------------------------------------------
# Aggregation, table and plots (also used by scripts/vlm_results.py).


def _type_order(name: str) -> tuple:
  """Sort key: data.spatial_scenes.QUESTION_TYPES order, other names (tfds) after."""
  from data import spatial_scenes  # pylint: disable=g-import-not-at-top
  known = spatial_scenes.QUESTION_TYPES
  return (known.index(name), "") if name in known else (len(known), name)


def summarize(runs: list[dict]) -> dict:
  """{label: {condition: {"accuracy": mean, "std", "seeds", "per_type": {t: mean}, "ptd"}}}.

  Runs are grouped by "label"; std is the sample standard deviation over seeds (0 for one).
  """
  groups = collections.defaultdict(list)
  for r in runs:
    groups[r["label"]].append(r)
  out = {}
  for label, rs in groups.items():
    out[label] = {}
    for cond in rs[0]["conditions"]:
      cs = [r["conditions"][cond] for r in rs if cond in r["conditions"]]
      acc = np.array([c["accuracy"] for c in cs])
      types = sorted({t for c in cs for t in c["per_type"]}, key=_type_order)
      out[label][cond] = {
          "accuracy": float(acc.mean()), "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
          "seeds": sorted(r["seed"] for r in rs if cond in r["conditions"]),
          "per_type": {t: float(np.mean([c["per_type"][t] for c in cs if t in c["per_type"]]))
                       for t in types},
          "ptd": float(np.mean([c["ptd"] for c in cs])),
          "majority_baseline": float(np.mean([c["majority_baseline"]["accuracy"] for c in cs])),
      }
  return out


def table(summary: dict) -> str:
  """Fixed-width text: one row per label, exact-match % per condition, PTD of (a)."""
  conds = [c for c in CONDITIONS if any(c in s for s in summary.values())]
  width = max(len(k) for k in summary) if summary else 5
  lines = [f"{'run':<{width}} " + " ".join(f"{c:>14}" for c in conds) + f" {'PTD (a)':>8}"]
  for label, s in summary.items():
    cells = [f"{100 * s[c]['accuracy']:8.1f} ±{100 * s[c]['std']:4.1f}" if c in s else " " * 14
             for c in conds]
    ptd = s.get("as_trained", {}).get("ptd", float("nan"))
    lines.append(f"{label:<{width}} " + " ".join(f"{x:>14}" for x in cells) + f" {ptd:8.3f}")
  return "\n".join(lines)


def plot_accuracy(runs: list[dict], path: str) -> None:
  """Exact-match accuracy per scheme (bars: mean over seeds; error bars: ± the sample std over
  seeds; dots: seeds), one panel per condition; the dashed line is the majority-answer
  baseline."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  summary = summarize(runs)
  labels = list(summary)
  conds = [c for c in CONDITIONS if any(c in s for s in summary.values())]
  fig, axes = plt.subplots(1, len(conds), figsize=(3.6 * len(conds), 3.8), sharey=True,
                           squeeze=False)
  x = np.arange(len(labels))
  for ax, cond in zip(axes[0], conds):
    means = [100 * summary[l][cond]["accuracy"] if cond in summary[l] else np.nan
             for l in labels]
    stds = [100 * summary[l][cond]["std"] if cond in summary[l] else np.nan for l in labels]
    ax.bar(x, means, yerr=stds, color="#4C72B0", alpha=0.8, capsize=2,
           error_kw={"elinewidth": 1, "ecolor": "#222222"})
    for i, label in enumerate(labels):
      accs = [100 * r["conditions"][cond]["accuracy"] for r in runs
              if r["label"] == label and cond in r["conditions"]]
      ax.plot([i] * len(accs), accs, "k.", markersize=4)
    base = [summary[l][cond]["majority_baseline"] for l in labels if cond in summary[l]]
    if base:
      ax.axhline(100 * float(np.mean(base)), color="gray", linestyle="--", linewidth=1,
                 label="majority answer")
    ax.set_title(CONDITION_TITLES.get(cond, cond), fontsize="medium")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
  axes[0][0].set_ylabel("exact-match accuracy (%)")
  axes[0][0].legend(fontsize="x-small", loc="upper right")
  fig.tight_layout()
  with epath.Path(path).open("wb") as f:  # Local or gs:// (a run's workdir).
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)


def plot_types(runs: list[dict], path: str) -> None:
  """Heat maps of accuracy (%) per scheme (rows) and question type (columns), per condition."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  summary = summarize(runs)
  labels = list(summary)
  conds = [c for c in CONDITIONS if any(c in s for s in summary.values())]
  cols = min(2, len(conds))
  rows = -(-len(conds) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, rows * (0.4 * len(labels) + 2.6)),
                           squeeze=False)
  for ax in axes.flat[len(conds):]:
    ax.axis("off")
  for ax, cond in zip(axes.flat, conds):
    types = list(dict.fromkeys(t for l in labels if cond in summary[l]
                               for t in summary[l][cond]["per_type"]))
    grid = np.array([[100 * summary[l][cond]["per_type"].get(t, np.nan)
                      if cond in summary[l] else np.nan for t in types] for l in labels])
    ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i in range(len(labels)):
      for j in range(len(types)):
        if np.isfinite(grid[i, j]):
          ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                  color="white" if grid[i, j] < 60 else "black")
    ax.set_xticks(range(len(types)))
    ax.set_xticklabels(types, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize="small")
    ax.set_title(CONDITION_TITLES.get(cond, cond), fontsize="medium")
  fig.tight_layout()
  with epath.Path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)


def write_outputs(runs: list[dict], out: str) -> list[str]:
  """OUT.json, OUT.png, OUT_types.png (local or gs://); returns the paths written."""
  from trainer import files  # pylint: disable=g-import-not-at-top
  out = files.absolute(out)
  paths = [out + ".json", out + ".png", out + "_types.png"]
  files.write_atomic(paths[0], json.dumps(  # Creates the directory; local or gs://.
      {"conditions": list(CONDITIONS), "runs": runs, "summary": summarize(runs)}, indent=2))
  plot_accuracy(runs, paths[1])
  plot_types(runs, paths[2])
  return paths


# ---------------------------------------------------------------------------------------------
# Command line.


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"{value} must be >= 1")
  return value


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m tasks.vlm_eval", description=__doc__.split(
      "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdirs", default="", help="Training workdirs (comma-separated).")
  p.add_argument("--workdir", action="append", default=[], help="A workdir (repeatable).")
  p.add_argument("--out", "--output", dest="out", default=None,
                 help="Output path without extension (.json, .png, _types.png).")
  p.add_argument("--labels", default="", help="Comma-separated labels, one per workdir "
                 "(default: the run's model.scheme; runs with one label are seeds).")
  p.add_argument("--checkpoint", default="best", help="'best', 'latest' or a step number.")
  p.add_argument("--conditions", default=",".join(CONDITIONS),
                 help=f"Comma-separated subset of {', '.join(CONDITIONS)}.")
  p.add_argument("--num_examples", type=_positive_int, default=None,
                 help="Examples per condition (default: the run's data.num_eval_examples).")
  p.add_argument("--batch_size", type=_positive_int, default=None,
                 help="Global eval batch size (default: the run's eval.batch_size).")
  p.add_argument("--compilation_cache", default="auto",
                 help="Persistent XLA compilation cache: 'auto' (a temporary one for several "
                 "workdirs unless JAX_COMPILATION_CACHE_DIR is set), 'off', or a directory to "
                 "keep (trainer/compile_cache.py).")
  return p


def main(argv: Sequence[str]) -> int:
  """Command-line entry point; argv[0] is the program name. Returns the exit code."""
  args = _parser().parse_args(list(argv[1:]))
  workdirs = [w for w in args.workdirs.split(",") if w] + list(args.workdir)
  if not workdirs:
    print("tasks.vlm_eval: give --workdir (or --workdirs).", file=sys.stderr)
    return 2
  labels = [l for l in args.labels.split(",") if l]
  if labels and len(labels) != len(workdirs):
    print(f"tasks.vlm_eval: --labels has {len(labels)} entries for {len(workdirs)} workdirs.",
          file=sys.stderr)
    return 2
  conditions = [c for c in args.conditions.split(",") if c]
  bad = [c for c in conditions if c not in CONDITIONS]
  if bad or not conditions:
    print(f"tasks.vlm_eval: --conditions={args.conditions!r}; allowed: "
          f"{', '.join(CONDITIONS)}.", file=sys.stderr)
    return 2
  if args.checkpoint not in ("best", "latest") and not args.checkpoint.isdigit():
    print(f"tasks.vlm_eval: --checkpoint={args.checkpoint!r}: use best, latest or a step.",
          file=sys.stderr)
    return 2
  if args.out is None and len(workdirs) > 1:
    print("tasks.vlm_eval: --out is required with several workdirs.", file=sys.stderr)
    return 2
  out = args.out or os.path.join(workdirs[0], "vlm_eval")
  from trainer import compile_cache  # pylint: disable=g-import-not-at-top
  runs = []
  with compile_cache.for_runs(args.compilation_cache, len(workdirs)):
    for i, workdir in enumerate(workdirs):
      try:
        run = evaluate_run(workdir, checkpoint=args.checkpoint, conditions=conditions,
                           num_examples=args.num_examples, batch_size=args.batch_size)
      except ValueError as e:
        print(f"tasks.vlm_eval: {e}", file=sys.stderr)
        return 1
      run["label"] = labels[i] if labels else run["scheme"]
      runs.append(run)
      print(f"{run['label']} seed {run['seed']} (step {run['step']}): " + ", ".join(
          f"{c} {100 * v['accuracy']:.1f}%" for c, v in run["conditions"].items()), flush=True)
  paths = write_outputs(runs, out)
  print(table(summarize(runs)))
  print(f"tasks.vlm_eval: wrote {', '.join(paths)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
