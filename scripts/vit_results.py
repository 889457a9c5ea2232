r"""Markdown table of ViT runs' top-1 against test resolution, from eval.py's JSON output.

  python eval.py --workdirs=$(ls -d runs/vit_smoke/*/seed0 | paste -sd,) \
      --labels=$(ls runs/vit_smoke | paste -sd,) --output=docs/results/vit_smoke
  python scripts/vit_results.py --eval=docs/results/vit_smoke.json --out=docs/results/vit_smoke.md

Rows are runs (eval.py's labels), columns test resolutions in pixels; the training resolution's
column is marked with "(train)". Runs with the same label are averaged (mean +- std over seeds).
The table is written between `<!-- vit_results:begin -->` and `<!-- vit_results:end -->` of the
output file (created if missing), so hand-written text around it survives a regeneration.
"""
import argparse
import collections
import json
import os
import statistics
import sys

BEGIN, END = "<!-- vit_results:begin -->", "<!-- vit_results:end -->"


def markdown_table(runs: list[dict]) -> str:
  """One row per label, one column per resolution; cells are top-1 % (mean +- std if seeds)."""
  if not runs:
    raise ValueError("--eval: the file holds no runs.")
  sizes = sorted({int(s) for r in runs for s in r["accuracy"]})
  train_sizes = {int(r["train_image_size"]) for r in runs}
  by_label = collections.OrderedDict()
  for r in runs:
    by_label.setdefault(r["label"], []).append(r)
  head = ["encoding", "seeds"] + [f"{s} px" + (" (train)" if s in train_sizes else "")
                                  for s in sizes]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label, group in by_label.items():
    cells = [f"`{label}`", str(len(group))]
    for s in sizes:
      vals = [100 * r["accuracy"][str(s)] for r in group if str(s) in r["accuracy"]]
      if not vals:
        cells.append("")
      elif len(vals) == 1:
        cells.append(f"{vals[0]:.1f}")
      else:
        cells.append(f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_between_markers(path: str, text: str) -> None:
  old = open(path).read() if os.path.exists(path) else ""
  block = f"{BEGIN}\n{text}\n{END}"
  if BEGIN in old and END in old:
    new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
  else:
    new = (old.rstrip() + "\n\n" if old else "") + block + "\n"
  with open(path, "w") as f:
    f.write(new)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--eval", required=True, help="eval.py's OUTPUT.json")
  parser.add_argument("--out", required=True, help="markdown file to write the table into")
  args = parser.parse_args(argv)
  with open(args.eval) as f:
    runs = json.load(f)["runs"]
  try:
    table = markdown_table(runs)
  except ValueError as e:
    print(f"vit_results.py: {e}", file=sys.stderr)
    return 1
  write_between_markers(args.out, table)
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
