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
