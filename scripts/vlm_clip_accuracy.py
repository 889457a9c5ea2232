r"""Accuracy on the video_elapsed clip questions by clip length and frame interval.

  python scripts/vlm_clip_accuracy.py --workdirs=runs/vlm_clips/mrope_time/seed0,runs/vlm_clips/mrope/seed0

For each run trained with video_elapsed in its mix (configs/vlm_*.py:...,clips): restores its
checkpoint (--checkpoint, default latest), greedily answers the eval condition (default (d)
multi_image, whose questions are two-image and video ones: with `clips` two thirds of them are
video_elapsed) as tasks/vlm.py's eval step does (answer word and EOS must match), and prints
exact match on the video_elapsed questions per clip length T (frames) and seconds per frame.

Reading: an answer is k * seconds per frame, k the first frame showing the move (1..T-1). A model
that knows the interval but not k is right for every T = 2 clip and for 1/(T-1) of the others
(61% on average over T = 2, 3, 4); one that does not know the interval is right on at most a
third of them, whatever it sees in the frames.
"""
import argparse
import collections
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def clip_accuracy(workdir: str, *, condition: str = "multi_image", num_examples: int = 1024,
                  checkpoint: str = "latest", batch_size: int = 128) -> dict:
  """{(frames, seconds per frame): [correct, count]} of a run's video_elapsed questions."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top
  from data import spatial_scenes  # pylint: disable=g-import-not-at-top
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  from trainer import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(loop.read_config(workdir).to_dict())
  config.eval.conditions = (condition,)
  config.data.num_eval_examples = num_examples
  config.eval.batch_size = batch_size
  config.lock()
  setup = loop.build(config, task=tasks.get_task(config))
  task = setup.task
  checkpoints = loop.open_checkpoints(config, workdir, read_only=True)
  step = checkpoint_lib.select_step(checkpoints, checkpoint, workdir)
  params = checkpoints.restore(step, loop.abstract_state(setup, config.seed))["params"]
  checkpoints.close()
  greedy = jax.jit(task.greedy_answers)
  elapsed = spatial_scenes.QUESTION_TYPES.index("video_elapsed")
  stats = collections.defaultdict(lambda: [0, 0])
  for local in task.eval_sets()[condition]:
    generated = np.asarray(greedy(params, mesh_lib.global_batch(local, setup.mesh)))
    for b in np.flatnonzero(local["question_type"] == elapsed):
      p = int(local["prompt_len"][b])
      want = local["tokens"][b][p:p + 2]   # the answer word and EOS
      key = (int(local["image_valid"][b].sum()), float(local["seconds_per_frame"][b]))
      stats[key][0] += bool((generated[b][:2] == want).all())
      stats[key][1] += 1
  return {"step": int(step), "stats": dict(stats)}


def report(workdir: str, result: dict) -> str:
  stats = result["stats"]
  if not stats:
    return f"{workdir}: no video_elapsed questions (trained without `clips`?)"
  correct = sum(c for c, _ in stats.values())
  count = sum(n for _, n in stats.values())
  lines = [f"{workdir} (step {result['step']}): video_elapsed {correct}/{count} = "
           f"{100 * correct / count:.1f}%"]
  rates = sorted({s for _, s in stats})
  for frames in sorted({t for t, _ in stats}):
    cells = [f"{s:g} s {stats.get((frames, s), [0, 0])[0]}/{stats.get((frames, s), [0, 0])[1]}"
             for s in rates]
    c = sum(v[0] for k, v in stats.items() if k[0] == frames)
    n = sum(v[1] for k, v in stats.items() if k[0] == frames)
    lines.append(f"  T={frames}: " + ", ".join(cells) + f"  | {100 * c / n:.1f}%")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdirs", required=True, help="Training workdirs (comma-separated).")
  p.add_argument("--condition", default="multi_image",
                 help="Eval condition (data.vlm_pipeline.EVAL_CONDITIONS).")
  p.add_argument("--num_examples", type=int, default=1024)
  p.add_argument("--checkpoint", default="latest", help="'best', 'latest' or a step number.")
  args = p.parse_args(argv)
  for workdir in filter(None, args.workdirs.split(",")):
    result = clip_accuracy(workdir, condition=args.condition, num_examples=args.num_examples,
                           checkpoint=args.checkpoint)
    print(report(workdir, result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
