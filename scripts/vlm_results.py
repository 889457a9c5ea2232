r"""Builds the VLM results tables (markdown) and plots from tasks/vlm_eval.py reports.

  python -m tasks.vlm_eval --workdirs=$(ls -d runs/vlm/*/seed* | paste -sd,) --out=runs/vlm/eval
  python scripts/vlm_results.py --eval=runs/vlm/eval.json --out=docs/results/vlm

Reads one or more OUT.json reports of tasks/vlm_eval.py (runs of the same label in several
files are pooled as seeds) and writes:
  OUT.md         the tables: exact match per scheme and condition (mean ± std over seeds),
                 the PTD of each scheme's ids, a majority-answer baseline, per-question-type
                 accuracy for every condition, and the run settings. If OUT.md already exists
                 and holds the markers <!-- vlm_results:begin --> / <!-- vlm_results:end -->,
                 only the text between them is replaced (hand-written reading around it stays).
  OUT_accuracy.png  accuracy per scheme, one panel per condition (+ the baseline).
  OUT_types.png     accuracy per scheme x question type, one heat map per condition.
  OUT_runs.json     the pooled runs (a tasks.vlm_eval report: --eval accepts it again).
"""
import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import vlm_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from tasks import vlm_eval  # pylint: disable=g-import-not-at-top,wrong-import-position

BEGIN, END = "<!-- vlm_results:begin -->", "<!-- vlm_results:end -->"
# Row order of the tables: the configs' order (configs/vlm_common.SCHEMES, old and new schemes).
SCHEME_ORDER = vlm_common.SCHEMES


def load_runs(paths: list[str]) -> list[dict]:
  runs = []
  for path in paths:
    with open(path) as f:
      report = json.load(f)
    if "runs" not in report:
      raise ValueError(f"{path}: not a tasks.vlm_eval report (no 'runs').")
    runs.extend(report["runs"])
  if not runs:
    raise ValueError("the reports hold no runs.")
  order = {s: i for i, s in enumerate(SCHEME_ORDER)}
  return sorted(runs, key=lambda r: (order.get(r["label"], len(order)), r["label"], r["seed"]))


def _pct(mean: float, std: float, n: int) -> str:
  return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "")


def main_table(summary: dict) -> str:
  conds = [c for c in vlm_eval.CONDITIONS if any(c in s for s in summary.values())]
  head = ["scheme", "seeds"] + [vlm_eval.CONDITION_TITLES[c] for c in conds] + [
      f"PTD {c[:1]}" for c in ("a", "b")]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label, s in summary.items():
    n = len(next(iter(s.values()))["seeds"])
    cells = [_pct(s[c]["accuracy"], s[c]["std"], n) if c in s else "" for c in conds]
    ptds = [f"{s[c]['ptd']:.3f}" if c in s else "" for c in ("as_trained", "larger_grid")]
    lines.append("| " + " | ".join([f"`{label}`", str(n)] + cells + ptds) + " |")
  base = [float(np.mean([s[c]["majority_baseline"] for s in summary.values() if c in s]))
          for c in conds]
  lines.append("| " + " | ".join(["majority answer", "-"] + [f"{100 * b:.1f}" for b in base]
                                 + ["", ""]) + " |")
  return "\n".join(lines)


def type_table(summary: dict, runs: list[dict], cond: str) -> str:
  types = list(dict.fromkeys(t for s in summary.values() if cond in s
                             for t in s[cond]["per_type"]))
  counts = {}
  for r in runs:
    for t, n in r["conditions"].get(cond, {}).get("per_type_count", {}).items():
      counts[t] = n
  head = ["scheme"] + [f"{t} (n={counts.get(t, '?')})" for t in types]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label, s in summary.items():
    if cond in s:
      cells = [f"{100 * s[cond]['per_type'][t]:.0f}" if t in s[cond]["per_type"] else ""
               for t in types]
      lines.append("| " + " | ".join([f"`{label}`"] + cells) + " |")
  base = {}
  for r in runs:
    for t, v in r["conditions"].get(cond, {}).get("majority_baseline", {}).get(
        "per_type", {}).items():
      base.setdefault(t, []).append(v)
  lines.append("| " + " | ".join(["majority answer"] + [
      f"{100 * np.mean(base[t]):.0f}" if t in base else "" for t in types]) + " |")
  return "\n".join(lines)


def settings(runs: list[dict]) -> str:
  """One line per distinct (model, training, data) setting of the runs."""
  seen = {}
  for r in runs:
    key = json.dumps([r["model"], r["training"], {k: v for k, v in r["data"].items()
                                                  if k != "video_as"}], sort_keys=True)
    seen.setdefault(key, []).append(r)
  out = []
  for rs in seen.values():
    m, t, d = rs[0]["model"], rs[0]["training"], rs[0]["data"]
    count = rs[0]["conditions"][next(iter(rs[0]["conditions"]))]["count"]
    out.append(
        f"- {len(rs)} run(s): decoder width {m['width']}, depth {m['depth']}, "
        f"{m['num_heads']} heads ({m['num_kv_heads']} KV) x {m['head_dim']}, theta "
        f"{m['theta']:g}, vision depth {m['vision_depth']}; {t['total_steps']} steps of batch "
        f"{t['batch_size']}; {d['image_size']} px images, {d['grid_size']}x{d['grid_size']} "
        f"grid, prefix {d['prefix_len'][0]}-{d['prefix_len'][1]} words; {count} eval examples "
        f"per condition; checkpoint steps {sorted({r['step'] for r in rs})}.")
  gap = max(abs(c["accuracy"] - c["tf_accuracy"]) for r in runs
            for c in r["conditions"].values())
  out.append(f"- Greedy (KV-cache) vs teacher-forced exact match: largest difference "
             f"{100 * gap:.2f} points over all runs and conditions.")
  return "\n".join(out)


def markdown(runs: list[dict], plot_prefix: str) -> str:
  summary = vlm_eval.summarize(runs)
  parts = [
      "Exact-match accuracy (%) of greedy answers; mean ± std over seeds when there are "
      "several. PTD: mean Per-Token Distance between text and image position ids (0 = every "
      "image token equidistant from every text token), on (a) and (b).",
      "", main_table(summary), "",
      f"![accuracy per scheme and condition]({plot_prefix}_accuracy.png)", ""]
  for cond in vlm_eval.CONDITIONS:
    if any(cond in s for s in summary.values()):
      parts += [f"Per question type, {vlm_eval.CONDITION_TITLES[cond]} (exact match %):", "",
                type_table(summary, runs, cond), ""]
  parts += [f"![accuracy per question type]({plot_prefix}_types.png)", "", "Runs:", "",
            settings(runs)]
  return "\n".join(parts)


def write_markdown(text: str, path: str) -> None:
  block = f"{BEGIN}\n{text}\n{END}"
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
    if BEGIN in old and END in old:
      block = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
  with open(path, "w") as f:
    f.write(block if block.endswith("\n") else block + "\n")


def main(argv: list[str]) -> int:
  p = argparse.ArgumentParser(prog="scripts/vlm_results.py", description=__doc__.split(
      "\n\n")[0])
  p.add_argument("--eval", required=True, help="tasks.vlm_eval JSON report(s), comma-separated.")
  p.add_argument("--out", required=True, help="Output prefix (OUT.md, OUT_accuracy.png, "
                 "OUT_types.png).")
  args = p.parse_args(argv[1:])
  try:
    runs = load_runs([x for x in args.eval.split(",") if x])
  except (OSError, ValueError) as e:
    print(f"vlm_results: {e}", file=sys.stderr)
    return 1
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out + "_runs.json", "w") as f:
    json.dump({"conditions": list(vlm_eval.CONDITIONS), "runs": runs,
               "summary": vlm_eval.summarize(runs)}, f, indent=1)
  vlm_eval.plot_accuracy(runs, args.out + "_accuracy.png")
  vlm_eval.plot_types(runs, args.out + "_types.png")
  text = markdown(runs, os.path.basename(args.out))
  write_markdown(text, args.out + ".md")
  print(text)
  print(f"vlm_results: wrote {args.out}.md, {args.out}_accuracy.png, {args.out}_types.png, "
        f"{args.out}_runs.json")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
