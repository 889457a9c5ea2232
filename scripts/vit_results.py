r"""Markdown table (and plot) of ViT runs' top-1 against test resolution, from eval.py's JSON.

  python eval.py --workdirs=$(ls -d runs/vit_smoke/*/seed0 | paste -sd,) \
      --labels=$(ls runs/vit_smoke | paste -sd,) --output=docs/results/vit_smoke
  python scripts/vit_results.py --eval=docs/results/vit_smoke.json --out=docs/results/vit_smoke.md

  # Issue 14's resolution study (configs/sweep_vit.py:fmnist,resolution): every JSON of both
  # protocols' directories, one table per protocol, one plot with a panel per protocol.
  python scripts/vit_results.py --eval=/tmp/study/eval/resize,/tmp/study/eval/canvas \
      --out=docs/results/vit_fmnist_resolution.md --plot=docs/results/vit_fmnist_resolution.png

--eval takes JSON files and / or directories of them (comma-separated). Rows are labels (runs
with the same label are averaged: mean +- std over seeds), columns test resolutions in pixels;
the training resolution's column is marked "(train)". Runs evaluated under several protocols
(eval.py --protocol) get one table each. The commit(s) eval.py ran at are stated above the
tables. The text is written between `<!-- vit_results:begin -->` and
`<!-- vit_results:end -->` of the output file (created if missing), so hand-written text around
it survives a regeneration.

--plot: accuracy against resolution with error bars (std over seeds), one panel per protocol,
colours grouped by position convention (`convention`): one colour family per convention,
shades within it.
"""
import argparse
import collections
import glob
import json
import os
import statistics
import sys

BEGIN, END = "<!-- vit_results:begin -->", "<!-- vit_results:end -->"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Position conventions, in legend order, with the matplotlib colour map of their family.
CONVENTIONS = {
    "no position": "Greys",
    "absolute embedding (resized)": "Oranges",
    "grid steps from the corner (extrapolated)": "Reds",
    "grid steps from the centre (extrapolated)": "RdPu",
    "normalised to the image": "Greens",
    "interpolated onto the training range": "Purples",
    "frequency scaling at test time": "Blues",
    "logit bias": "cool",
}
_SCALE_CONVENTION = {
    "index": "grid steps from the corner (extrapolated)",
    "unit": "grid steps from the corner (extrapolated)",
    "pi": "grid steps from the centre (extrapolated)",
    "center": "normalised to the image",
    "centered": "normalised to the image",
    "index_interp": "interpolated onto the training range",
}


def convention(run: dict) -> str:
  """The position convention a run is evaluated under (a key of CONVENTIONS), from its
  encoding (the registry entry's kind and position scale) and eval.py's test-time options."""
  if run.get("rope_scaling", "none") != "none":
    return "frequency scaling at test time"
  if REPO not in sys.path:
    sys.path.insert(0, REPO)   # run as a script from anywhere
  from models.vit_encodings import ENCODINGS  # pylint: disable=g-import-not-at-top
  name = str(run.get("encoding") or run["label"]).split("+")[0]
  entry = ENCODINGS.find(name)
  if entry is None or entry.kind == "none":
    return "no position"
  if entry.kind == "absolute":
    return "absolute embedding (resized)"
  if entry.kind == "bias":
    return "logit bias"
  return _SCALE_CONVENTION[run.get("positions") or entry.scale]


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


def by_protocol(runs: list[dict]) -> dict[str, list[dict]]:
  """Runs per eval.py protocol ("resize" for JSON written before --protocol existed)."""
  out = collections.OrderedDict()
  for r in runs:
    out.setdefault(r.get("protocol", "resize"), []).append(r)
  return out


def markdown(runs: list[dict], commits: list[str]) -> str:
  """The commit line (if known) and one table per protocol (a single "resize" protocol: the
  table alone, as before protocols existed)."""
  if not runs:
    raise ValueError("--eval: the file holds no runs.")
  protocols = by_protocol(runs)
  parts = []
  if commits:
    parts.append("Evaluated (eval.py) at commit " + ", ".join(f"`{c}`" for c in commits) + ".")
  if list(protocols) == ["resize"]:
    parts.append(markdown_table(runs))
  else:
    for protocol, members in protocols.items():
      parts.append(f"Protocol **{protocol}**:\n\n{markdown_table(members)}")
  return "\n\n".join(parts)


def _accuracy_stats(group: list[dict]) -> tuple[list[int], list[float], list[float]]:
  sizes = sorted({int(s) for r in group for s in r["accuracy"]})
  mean, std = [], []
  for s in sizes:
    vals = [100 * r["accuracy"][str(s)] for r in group if str(s) in r["accuracy"]]
    mean.append(statistics.mean(vals))
    std.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
  return sizes, mean, std


def plot(runs: list[dict], path: str) -> None:
  """Top-1 against resolution, one panel per protocol, error bars = std over seeds, colours
  by `convention` (one colour family per convention, shades within it)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  protocols = by_protocol(runs)
  labels = list(dict.fromkeys(r["label"] for r in runs))
  conv = {label: convention(next(r for r in runs if r["label"] == label)) for label in labels}
  colours = {}
  for c, cmap in CONVENTIONS.items():
    members = [label for label in labels if conv[label] == c]
    shades = plt.get_cmap(cmap)([0.85 - 0.45 * i / max(len(members) - 1, 1)
                                 for i in range(len(members))])
    colours.update(zip(members, shades))
  width = 6.0 * len(protocols) + 4.0      # the last 4 inches: the legend
  fig, axes = plt.subplots(1, len(protocols), figsize=(width, 6.0), sharey=True, squeeze=False)
  for ax, (protocol, members) in zip(axes[0], protocols.items()):
    for label in labels:
      group = [r for r in members if r["label"] == label]
      if not group:
        continue
      sizes, mean, std = _accuracy_stats(group)
      ax.errorbar(sizes, mean, yerr=std if len(group) > 1 else None, marker="o", capsize=3,
                  color=colours[label], label=f"{label} (n={len(group)})")
    for t in sorted({int(r["train_image_size"]) for r in members}):
      ax.axvline(t, color="k", linestyle=":", alpha=0.5)
    ax.set_title(f"protocol: {protocol}")
    ax.set_xlabel("test resolution (pixels); dotted: training resolution")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("top-1 accuracy (%), mean +- std over seeds")
  handles = {}
  for ax in axes[0]:
    for h, l in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(l.rsplit(" (n=", 1)[0], (h, l))
  # The legend lists the labels convention by convention, each group under its name.
  entries = []
  for c in CONVENTIONS:
    members = [label for label in labels if conv[label] == c and label in handles]
    if members:
      entries.append((matplotlib.lines.Line2D([], [], linestyle="none"), c + ":"))
      entries += [handles[label] for label in members]
  fig.legend(*zip(*entries), fontsize="small", loc="center right",
             title="colour: position convention", title_fontsize="small")
  fig.tight_layout(rect=(0, 0, 1 - 4.0 / width, 1))
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_between_markers(path: str, text: str) -> None:
  old = open(path).read() if os.path.exists(path) else ""
  block = f"{BEGIN}\n{text}\n{END}"
  if BEGIN in old and END in old:
    new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END):]
  else:
    new = (old.rstrip() + "\n\n" if old else "") + block + "\n"
  with open(path, "w") as f:
    f.write(new)


def read_evals(spec: str) -> tuple[list[dict], list[str]]:
  """Runs and distinct commits of every JSON named by `spec` (files / directories, commas)."""
  paths = []
  for item in filter(None, (s.strip() for s in spec.split(","))):
    found = sorted(glob.glob(os.path.join(item, "*.json"))) if os.path.isdir(item) else [item]
    if not found:
      raise ValueError(f"--eval: no JSON in {item!r}.")
    paths += found
  runs, commits = [], []
  for path in paths:
    with open(path) as f:
      report = json.load(f)
    runs += report["runs"]
    if report.get("commit") and report["commit"] not in commits:
      commits.append(report["commit"])
  return runs, commits


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--eval", required=True,
                      help="eval.py's OUTPUT.json files and / or directories (comma-separated)")
  parser.add_argument("--out", required=True, help="markdown file to write the table into")
  parser.add_argument("--plot", default=None, help="PNG to draw (optional)")
  args = parser.parse_args(argv)
  try:
    runs, commits = read_evals(args.eval)
    text = markdown(runs, commits)
  except (ValueError, OSError) as e:
    print(f"vit_results.py: {e}", file=sys.stderr)
    return 1
  write_between_markers(args.out, text)
  if args.plot:
    plot(runs, args.plot)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
