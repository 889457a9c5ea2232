"""Tests of tasks/vlm.py (through the real training loop) and tasks/vlm_eval.py.

Tiny models (width 32, 1-2 layers) on 4 fake CPU devices; references are re-derived here:
the loss from the model's logits, greedy decoding by re-running the full (uncached) forward,
PTD from its definition.
"""
import json
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import conftest
import tasks
import trainer
from configs import vlm_common
from data import spatial_scenes
from data import tokenizer
from models import vlm
from tasks import vlm as vlm_task
from tasks import vlm_eval
from trainer import loop
from trainer import metrics as metrics_lib


REPO = pathlib.Path(__file__).resolve().parents[1]


def _build(config):
  """loop.build with the config's task (the caller picks it; the trainer imports no task)."""
  return loop.build(config, task=tasks.get_task(config))


def tiny_config(scheme: str, **data) -> ml_collections.ConfigDict:
  """The scheme's smoke config shrunk to a couple of steps of a 1-2 layer model."""
  c = vlm_common.get_config(scheme, "smoke")
  with c.unlocked():
    c.model.update(width=32, depth=2 if scheme == "circle_age" else 1, mlp_dim=64)
    c.model.vision.width = 16
    c.data.update(num_eval_examples=8, prefetch=0, **data)
    c.training.update(batch_size=8, total_steps=2, log_every_steps=1, tensorboard=False)
    c.optim.warmup_steps = 1
    c.eval.batch_size = 8
    c.checkpoint.update(every_steps=2, async_save=False)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """{scheme: workdir} of two-step runs through trainer.train_and_evaluate."""
  out = {}
  for scheme in ("mrope_interleave", "circle_age"):  # AGE: two id sets, two layers
    workdir = str(tmp_path_factory.mktemp(scheme))
    config = tiny_config(scheme)
    if scheme == "mrope_interleave":  # No eval set: saves compiling a second eval step.
      with config.unlocked():
        config.eval.conditions = ()
    result = trainer.train_and_evaluate(config, workdir, task=tasks.get_task(config))
    assert result.status == "finished" and result.step == 2
    _write_old_config_json(workdir)
    out[scheme] = (workdir, result)
  return out


def _write_old_config_json(workdir):
  """Rewrites config.json as runs before the scheme registry wrote it: the position design
  stated again as data.scheme / data.scheme_options / data.age, no model.attention_impl. The
  evaluation tests below then read old run directories (tasks.vlm.upgrade_config)."""
  path = loop.workdir_paths(workdir)["config"]
  with open(path) as f:
    config = json.load(f)
  scheme = config["model"]["scheme"]
  config["data"]["scheme"] = {"circle_age": "circle", "mrope_interleave": "spatial_reset"}[scheme]
  config["data"]["scheme_options"] = {"temporal_stride": None, "alpha": None, "radius": None}
  config["data"]["age"] = scheme == "circle_age"
  del config["model"]["attention_impl"]
  with open(path, "w") as f:
    json.dump(config, f)


@pytest.mark.parametrize("scheme", ["mrope_interleave", "circle_age"])
def test_train_step_through_the_loop(trained, scheme):
  workdir, result = trained[scheme]
  assert loop.read_config(workdir).model.scheme == scheme
  if scheme == "circle_age":
    m = result.eval_metrics
    assert m["as_trained/count"] == 8
    # The loop divides every sum by the row count: the type shares add up to one.
    shares = [v for k, v in m.items() if k.startswith("as_trained/n/")]
    assert len(shares) == len(spatial_scenes.QUESTION_TYPES) and np.isclose(sum(shares), 1.0)
    assert 0.0 <= m["as_trained/accuracy"] <= 1.0 and np.isfinite(m["as_trained/loss"])
  else:
    assert result.eval_metrics == {}
  records = metrics_lib.read_jsonl(loop.workdir_paths(workdir)["metrics"])
  steps = [r for r in records if "train/loss" in r]
  assert [s["step"] for s in steps] == [1, 2]
  assert all(np.isfinite(s["train/loss"]) for s in steps)


@pytest.fixture(scope="module")
def task_and_batch():
  task = tasks.get_task(tiny_config("mrope"))
  params = jax.jit(task.init_params)(jax.random.key(0))
  batch = next(iter(task.eval_sets()["as_trained"]))
  return task, params, batch


def test_loss_is_answer_token_cross_entropy(task_and_batch):
  task, params, batch = task_and_batch
  loss, metrics = jax.jit(task.loss_fn)(params, batch, jax.random.key(1))
  forward = jax.jit(lambda p, x: task.model.apply({"params": p}, **vlm.model_inputs(x)))
  logits = np.asarray(forward(params, batch), np.float64)
  tokens, mask = batch["tokens"], batch["loss_mask"]
  nll, hits = [], []
  for b, t in zip(*np.nonzero(mask)):  # answer token t is predicted at t - 1
    z = logits[b, t - 1]
    nll.append(np.log(np.sum(np.exp(z - z.max()))) + z.max() - z[tokens[b, t]])
    hits.append(np.argmax(z) == tokens[b, t])
  assert np.isclose(float(loss), np.mean(nll), rtol=1e-5)
  assert np.isclose(float(metrics["token_accuracy"]), np.mean(hits))
  # loss_mask covers exactly the answer words and EOS.
  for b in range(len(tokens)):
    answer = tokens[b][mask[b]]
    assert answer[-1] == tokenizer.EOS and len(answer) >= 2


def reference_greedy(task, params, batch, num_tokens):
  """Greedy decoding without a cache: the full forward is re-run after each new token.

  The prompt plus the tokens chosen so far fill a right-padded buffer (valid marks them) whose
  generated slots get ids next_position + k on all axes; causal attention keeps the padding
  from influencing them, so one fixed-shape jitted forward serves every step.
  """
  forward = jax.jit(lambda p, x: task.model.apply({"params": p}, **x))
  tokens = np.array(batch["tokens"])
  positions = np.array(batch["positions"])
  prompt_len = np.array(batch["prompt_len"])
  rows = np.arange(len(tokens))
  out = np.zeros((len(tokens), num_tokens), np.int32)
  for k in range(num_tokens):
    length = prompt_len + k
    valid = np.arange(tokens.shape[1])[None, :] < length[:, None]
    inputs = {"tokens": np.where(valid, tokens, 0), "images": batch["images"],
              "image_valid": batch["image_valid"], "positions": positions,
              "positions_alt": positions, "valid": valid}
    logits = np.asarray(forward(params, inputs))
    out[:, k] = np.argmax(logits[rows, length - 1], axis=-1)
    tokens[rows, length] = out[:, k]
    positions[rows, length] = (batch["next_position"] + k)[:, None]
  return out


def test_eval_exact_match_is_greedy_decoding(task_and_batch):
  task, params, batch = task_and_batch
  eval_step = jax.jit(task.eval_step)
  greedy = np.asarray(jax.jit(task.greedy_answers)(params, batch))
  assert greedy.shape == (len(batch["tokens"]), task.max_new_tokens)
  np.testing.assert_array_equal(greedy, reference_greedy(task, params, batch,
                                                         task.max_new_tokens))
  # Write the model's own greedy answer into the answer slots: every row is an exact match;
  # then change one answer token of row 0: only that row fails.
  rows = len(greedy)
  own = {k: np.array(v) for k, v in batch.items()}
  for b in range(rows):
    slots = np.flatnonzero(own["loss_mask"][b])
    own["tokens"][b, slots] = greedy[b, :len(slots)]
  out = eval_step(params, own)
  assert float(out["count"]) == rows and float(out["accuracy"]) == rows
  assert float(out["tf_accuracy"]) == rows
  first = np.flatnonzero(own["loss_mask"][0])[0]
  own["tokens"][0, first] = (own["tokens"][0, first] + 1) % task.info.vocab_size
  out = eval_step(params, own)
  assert float(out["accuracy"]) == rows - 1
  qtype = vlm_task.question_types(task.config.data)[int(own["question_type"][0])]
  assert float(out[f"n/{qtype}"]) - float(out[f"correct/{qtype}"]) == 1


def test_ptd_meter_matches_the_definition():
  # BOS, 2x2 image (ids of a 2-D grid), 2 text tokens; PTD from docs/spec/circle_rope.md §3.
  tokens = np.array([1, 3, 3, 3, 3, 7, 8, 0])
  pos = np.array([[0, 0, 0], [1, 1, 1], [1, 1, 2], [1, 2, 1], [1, 2, 2], [3, 3, 3], [4, 4, 4],
                  [0, 0, 0]], np.float32)
  valid = np.arange(8) < 7
  text, image = pos[[0, 5, 6]], pos[1:5]
  d = np.linalg.norm(text[:, None] - image[None], axis=-1)
  expected = np.mean(np.abs(d - d.mean(1, keepdims=True)))
  meter = vlm_eval.PtdMeter(image_token=3, tokens_per_image=4, columns=3)
  assert np.isclose(meter.sample_ptd(tokens, pos, valid), expected, atol=1e-6)
  d1 = np.abs(text[:, None, 0] - image[None, :, 0])  # 1-D: the t column only
  meter1 = vlm_eval.PtdMeter(image_token=3, tokens_per_image=4, columns=1)
  assert np.isclose(meter1.sample_ptd(tokens, pos, valid),
                    np.mean(np.abs(d1 - d1.mean(1, keepdims=True))), atol=1e-6)


def test_eval_writes_report_and_plots(trained, tmp_path):
  workdir = trained["circle_age"][0]
  out = tmp_path / "report"
  code = vlm_eval.main(["vlm_eval", f"--workdir={workdir}", f"--out={out}", "--labels=age",
                        "--num_examples=8"])
  assert code == 0
  for suffix in (".json", ".png", "_types.png"):
    assert (tmp_path / f"report{suffix}").stat().st_size > 0
  report = json.loads((tmp_path / "report.json").read_text())
  (run,) = report["runs"]
  assert run["label"] == "age" and run["scheme"] == "circle_age" and run["step"] == 2
  assert list(run["conditions"]) == list(vlm_eval.CONDITIONS)
  for c in run["conditions"].values():
    assert c["count"] == 8 and sum(c["per_type_count"].values()) == 8
    assert 0.0 <= c["accuracy"] <= 1.0 and 0.0 <= c["majority_baseline"]["accuracy"] <= 1.0
    # Circle-RoPE puts every image token at the same distance from every text token: PTD 0;
    # the M-RoPE ids of AGE's other layers do not.
    assert abs(c["ptd"]) < 1e-4 and c["ptd_alt"] > 0.1
  # (d) holds only two-image / video questions; (b) has 8x8 token grids.
  assert set(run["conditions"]["multi_image"]["per_type_count"]) <= {
      "two_image_more", "video_moved", "video_where"}
  assert run["conditions"]["larger_grid"]["image_tokens"] == [8, 8]
  assert run["conditions"]["larger_grid"]["max_len"] == 152
  # The evaluation reproduces the training loop's own final evaluation (same checkpoint).
  final = trained["circle_age"][1].eval_metrics
  assert np.isclose(run["conditions"]["as_trained"]["accuracy"] * 8,
                    final["as_trained/accuracy"] * final["as_trained/count"])


def test_summary_over_seeds():
  def run(label, seed, acc):
    cond = {"accuracy": acc, "per_type": {"count": acc}, "ptd": 0.5,
            "majority_baseline": {"accuracy": 0.25}}
    return {"label": label, "seed": seed, "conditions": {"as_trained": cond}}
  summary = vlm_eval.summarize([run("a", 0, 0.5), run("a", 1, 0.7), run("b", 0, 0.1)])
  assert summary["a"]["as_trained"]["seeds"] == [0, 1]
  assert np.isclose(summary["a"]["as_trained"]["accuracy"], 0.6)
  assert np.isclose(summary["a"]["as_trained"]["std"], np.std([0.5, 0.7], ddof=1))
  assert summary["b"]["as_trained"]["std"] == 0.0
  assert "a " in vlm_eval.table(summary) and "60.0" in vlm_eval.table(summary)


def test_results_script_pools_seeds_from_several_reports(tmp_path):
  # The README's VLM table is built this way: runs evaluated in several tasks.vlm_eval
  # processes, each report holding some schemes and seeds; one row per scheme, seeds pooled.
  vlm_results = conftest.load_script("vlm_results")

  def run(label, seed, acc):
    cond = {"count": 512, "accuracy": acc, "tf_accuracy": acc, "loss": 1.0,
            "per_type": {"count": acc}, "per_type_count": {"count": 512}, "ptd": 0.5,
            "majority_baseline": {"accuracy": 0.25, "per_type": {"count": 0.25}}}
    return {"label": label, "scheme": label, "seed": seed, "step": 600,
            "model": {"width": 96, "depth": 3, "num_heads": 3, "num_kv_heads": 3,
                      "head_dim": 32, "theta": 1e4, "vision_depth": 0},
            "training": {"batch_size": 64, "total_steps": 600},
            "data": {"image_size": 32, "grid_size": 4, "video_as": "video",
                     "prefix_len": [0, 8]},
            "conditions": {"as_trained": cond, "larger_grid": cond}}
  reports = []
  for name, runs in (("a", [run("mrope", 0, 0.50), run("vanilla", 1, 0.40)]),
                     ("b", [run("mrope", 1, 0.54), run("mrope", 2, 0.58),
                            run("vanilla", 0, 0.30)])):
    reports.append(tmp_path / f"{name}.json")
    reports[-1].write_text(json.dumps({"runs": runs}))
  out = tmp_path / "results" / "vlm"
  assert vlm_results.main(["vlm_results", "--eval=" + ",".join(map(str, reports)),
                           f"--out={out}"]) == 0
  table = (tmp_path / "results" / "vlm.md").read_text()
  # Rows in configs/vlm_common.SCHEMES order; mean ± sample std over the pooled seeds.
  assert (table.index("| `vanilla` | 2 | 35.0 ± 7.1 |")
          < table.index("| `mrope` | 3 | 54.0 ± 4.0 |"))
  pooled = json.loads((tmp_path / "results" / "vlm_runs.json").read_text())
  assert sorted((r["label"], r["seed"]) for r in pooled["runs"]) == [
      ("mrope", 0), ("mrope", 1), ("mrope", 2), ("vanilla", 0), ("vanilla", 1)]
  assert (tmp_path / "results" / "vlm_accuracy.png").stat().st_size > 0


def test_ptd_of_the_batches(task_and_batch):
  # M-RoPE ids (task_and_batch uses "mrope") put text and image tokens at varying distances.
  task, _, batch = task_and_batch
  meter = vlm_eval.PtdMeter(tokenizer.IMAGE, 16, columns=3)
  meter.add_batch(batch)
  assert meter.count == 8 and meter.value > 0.1


def test_eval_rejects_a_classification_workdir(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"task": "classification"}))
  assert vlm_eval.main(["vlm_eval", f"--workdir={tmp_path}"]) == 1


@pytest.mark.parametrize("change, match", [
    (lambda c: c.model.update(scheme="rope3d"), "scheme"),
    (lambda c: c.model.update(max_len=48), "model.max_len=48"),
    (lambda c: c.eval.update(conditions=("as_trained", "larger_grid")),
     "model.max_len=100 .*larger_grid"),
    (lambda c: c.data.update(max_len=40), "max_len=40"),
    (lambda c: c.eval.update(conditions=("bigger",)), "eval.conditions"),
    (lambda c: c.data.update(scheme="mrope"), "data.scheme"),
])
def test_bad_config_fails_at_start_up(change, match):
  c = tiny_config("mrope_interleave")
  with c.unlocked():
    c.model.max_len = 100  # fits training (64) but not the larger-grid condition (152)
    change(c)
  with pytest.raises(ValueError, match=match):
    _build(c)


def test_circle_rejects_a_video_at_start_up():
  c = tiny_config("circle", video_as="video")
  with pytest.raises(ValueError, match="video_as='video'.*`scheme`='circle' cannot place Video"):
    _build(c)
  # Frames (two Image segments) are fine, and so is circle with video questions removed.
  _build(tiny_config("circle"))
  c = tiny_config("circle", video_as="video")
  with c.unlocked():
    c.data.question_mix.update(video_moved=0.0, video_where=0.0)
  _build(c)


def test_upgrade_config_drops_the_old_data_keys():
  c = tiny_config("circle_age")
  old = c.to_dict()
  old["data"].update(scheme="circle", age=True, scheme_options={"alpha": None})
  del old["model"]["attention_impl"]
  for key in ("clip_min_frames", "clip_max_frames", "clip_seconds_per_frame"):
    del old["data"][key]   # data keys newer than the config: their defaults keep its data
  del old["data"]["question_mix"]["video_elapsed"]
  new = vlm_task.upgrade_config(ml_collections.ConfigDict(old))
  assert new.to_dict() == c.to_dict()
  assert vlm_task.upgrade_config(c).to_dict() == c.to_dict()   # current configs unchanged
  old["data"]["age"] = False
  with pytest.raises(ValueError, match="data.age=False"):
    vlm_task.upgrade_config(ml_collections.ConfigDict(old))


def test_unknown_scheme_in_the_config_file():
  with pytest.raises(ValueError, match="scheme='rope3d' is unknown"):
    vlm_common.get_config("rope3d", "smoke")
  with pytest.raises(ValueError, match="exclude each other"):
    vlm_common.get_config("mrope", "smoke,cpu")


def test_eval_py_hands_vlm_workdirs_to_the_vlm_evaluation(trained, tmp_path):
  """`python eval.py --workdirs=<a vlm run>` writes the VLM report (not the ViT resolution one).

  A subprocess, as a user runs it: parsing the process-wide absl flags in-process would also
  check the required flags of whatever other script a test of this worker has imported."""
  workdir = trained["circle_age"][0]
  out = tmp_path / "via_eval_py"
  proc = subprocess.run(
      [sys.executable, "eval.py", f"--workdirs={workdir}", f"--output={out}",
       "--num_examples=8"], cwd=REPO, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads((tmp_path / "via_eval_py.json").read_text())
  assert report["runs"][0]["scheme"] == "circle_age"
  assert (tmp_path / "via_eval_py.png").stat().st_size > 0
