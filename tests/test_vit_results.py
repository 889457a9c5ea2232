"""scripts/vit_results.py turns eval.py's JSON into the README's markdown table."""
import json
import sys
import pathlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import vit_results  # noqa: E402


def test_table_and_regeneration_keep_surrounding_text(tmp_path):
  runs = [
      {"label": "spherical", "train_image_size": 8, "accuracy": {"4": 0.5, "8": 0.9}},
      {"label": "spherical", "train_image_size": 8, "accuracy": {"4": 0.7, "8": 0.95}},
      {"label": "ape", "train_image_size": 8, "accuracy": {"8": 0.8, "16": 0.25}},
  ]
  (tmp_path / "e.json").write_text(json.dumps({"runs": runs}))
  out = tmp_path / "r.md"
  out.write_text("# Title\n\nreading above\n")
  assert vit_results.main([f"--eval={tmp_path / 'e.json'}", f"--out={out}"]) == 0
  text = out.read_text()
  assert text.startswith("# Title\n\nreading above\n")
  assert "| encoding | seeds | 4 px | 8 px (train) | 16 px |" in text
  assert "| `spherical` | 2 | 60.0 ± 14.1 | 92.5 ± 3.5 |  |" in text
  assert "| `ape` | 1 |  | 80.0 | 25.0 |" in text
  # Regenerating replaces only the table.
  out.write_text(text + "\nreading below\n")
  runs[2]["accuracy"]["8"] = 0.5
  (tmp_path / "e.json").write_text(json.dumps({"runs": runs}))
  assert vit_results.main([f"--eval={tmp_path / 'e.json'}", f"--out={out}"]) == 0
  text = out.read_text()
  assert "| `ape` | 1 |  | 50.0 | 25.0 |" in text and text.count("vit_results:begin") == 1
  assert text.rstrip().endswith("reading below")


def test_empty_eval_file_is_an_error(tmp_path):
  (tmp_path / "e.json").write_text(json.dumps({"runs": []}))
  assert vit_results.main([f"--eval={tmp_path / 'e.json'}", f"--out={tmp_path / 'r.md'}"]) == 1


def _run(label, seed, protocol, acc, **extra):
  return dict({"label": label, "encoding": label.split("+")[0], "seed": seed,
               "protocol": protocol, "train_image_size": 8, "rope_scaling": "none",
               "positions": None, "accuracy": acc}, **extra)


def test_protocols_test_time_variants_commit_and_plot(tmp_path):
  """The resolution study's shape: two eval directories (one per protocol), test-time
  variants as their own rows, the commit stated, one plot coloured by convention."""
  for protocol, sizes in (("resize", ("4", "8", "16")), ("canvas", ("8", "16"))):
    d = tmp_path / protocol
    d.mkdir()
    for label, extra in (("axial", {}), ("axial+yarn", {"rope_scaling": "yarn"})):
      runs = [_run(label, s, protocol, {k: 0.5 + 0.1 * s for k in sizes}, **extra)
              for s in (0, 1)]
      (d / f"{label}.json").write_text(json.dumps({"commit": "abc123", "runs": runs}))
  out, png = tmp_path / "r.md", tmp_path / "r.png"
  assert vit_results.main([f"--eval={tmp_path / 'resize'},{tmp_path / 'canvas'}",
                           f"--out={out}", f"--plot={png}"]) == 0
  text = out.read_text()
  assert "Evaluated (eval.py) at commit `abc123`." in text
  resize, canvas = text.split("Protocol **resize**:")[1].split("Protocol **canvas**:")
  assert "| `axial+yarn` | 2 | 55.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 |" in resize
  assert "| encoding | seeds | 8 px (train) | 16 px |" in canvas
  assert "| `axial` | 2 | 55.0 ± 7.1 | 55.0 ± 7.1 |" in canvas
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_position_conventions():
  conv = lambda label, **extra: vit_results.convention(_run(label, 0, "resize", {}, **extra))
  assert conv("none") == "no position"
  assert conv("ape") == conv("sincos") == "absolute embedding (resized)"
  assert conv("axial") == conv("mixed") == conv("liere") == conv("string_cayley") == (
      "grid steps from the corner (extrapolated)")
  assert conv("spherical") == "grid steps from the centre (extrapolated)"
  assert conv("dinov3") == conv("comrope_ld") == "normalised to the image"
  assert conv("eva02") == conv("axial", positions="index_interp") == (
      "interpolated onto the training range")
  assert conv("eva02", positions="index", rope_scaling="yarn") == (
      "frequency scaling at test time")
  assert conv("lookhere") == conv("fire") == "logit bias"
  assert set(vit_results._SCALE_CONVENTION.values()) <= set(vit_results.CONVENTIONS)
