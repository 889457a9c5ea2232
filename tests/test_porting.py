"""Ported checkpoints (porting/, scripts/port_checkpoint.py) against the upstream code's outputs.

tests/golden/checkpoints/*.npz: tiny models built with the real upstream code (rope-vit,
DINOv3, timm's EVA-02), their state_dicts under the original names, inputs and the outputs
upstream computes at two resolutions (README.md there). Bound: 1e-4 of the largest magnitude,
float32 (the README's independent float64 re-implementation stays within 5e-6).
"""
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import vit
from porting import family_module
from porting import model as port_model
from porting import state_dict as sdl

GOLDEN = pathlib.Path(__file__).parent / "golden" / "checkpoints"
ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-4
AXIAL = GOLDEN / "ropevit_axial__d2_w64_h4_p4_i32.npz"
MIXED = GOLDEN / "ropevit_mixed__d2_w64_h4_p4_i32.npz"
MIXED_APE = GOLDEN / "ropevit_mixed_ape__d2_w64_h4_p4_i32.npz"
DINOV3 = GOLDEN / "dinov3__d2_w64_h4_p4_i32_mlp.npz"
EVA02 = GOLDEN / "eva02__d2_w64_h4_p4_i32_unfused_subln.npz"
# What the files do not hold (README there: 4 heads; EVA-02 ref_feat_shape 6x6).
OPTIONS = {"ropevit": dict(num_heads=4), "dinov3": dict(image_size=32),
           "eva02": dict(num_heads=4, rope_grid=(6, 6))}


def _relative(got, ref) -> float:
  return float(np.abs(np.asarray(got) - ref).max() / np.abs(ref).max())


def _port(family, sd, **overrides):
  """(model, params, ported) of a state_dict; `overrides`: model config values."""
  ported = family_module(family).convert(sd, **OPTIONS[family])
  config = port_model.model_config(ported)
  config.prune_last_block = False       # keep every token's final features
  config.update(overrides)
  width = vit.model_dims(config)["width"]
  classes = ported.params["head"]["kernel"].shape[-1] if "head" in ported.params else width
  params = port_model.complete_params(ported, config, classes)
  return vit.model_from_config(config, classes), params, ported


def _apply(model, params, images):
  """NCHW images -> (logits, final-normed features). Eager, not jitted: every golden model has
  the same sizes, so the per-op compilations are shared by all the tests (cheaper in CPU than
  one jit compilation per model and resolution)."""
  with jax.default_matmul_precision("highest"):
    out, state = model.apply({"params": params}, jnp.asarray(images.transpose(0, 2, 3, 1)),
                             train=False, mutable=["features"])
  return np.asarray(out), np.asarray(state["features"]["normed"][0])


def _logit_errors(family, path, sd=None, resolutions=("", "_res2"), **overrides):
  """max |ours - upstream| / max |upstream| of the logits at each resolution ("", "_res2")."""
  z = np.load(path)
  model, params, _ = _port(family, sdl.load(str(path)) if sd is None else sd, **overrides)
  return [_relative(_apply(model, params, z[f"images{r}"])[0], z[f"logits{r}"])
          for r in resolutions]


@pytest.mark.parametrize("family,path", [("ropevit", AXIAL), ("ropevit", MIXED),
                                         ("ropevit", MIXED_APE), ("eva02", EVA02)],
                         ids=["ropevit_axial", "ropevit_mixed", "ropevit_mixed_ape", "eva02"])
def test_logits_match_upstream_at_both_resolutions(family, path):
  errors = _logit_errors(family, path)
  assert max(errors) <= TOL, errors


def test_dinov3_class_register_patch_features_match_upstream():
  z = np.load(DINOV3)
  model, params, ported = _port("dinov3", sdl.load(str(DINOV3)))
  assert ported.model["periods_dtype"] == "bfloat16"     # the file's periods are bf16-rounded
  assert ported.model["qkv_bias"] == "qv"                 # its bias_mask
  for image, suffix in (("images", ""), ("images_res2", "_res2")):
    _, features = _apply(model, params, z[image])
    np.testing.assert_array_equal(z[f"logits{suffix}"], z[f"features_cls{suffix}"])
    for name, got in (("cls", features[:, 0]), ("storage", features[:, 1:5]),
                      ("patch", features[:, 5:])):
      assert _relative(got, z[f"features_{name}{suffix}"]) <= TOL, (name, suffix)


def test_the_reference_details_matter():
  """Each option the families need moves the outputs well beyond the bound when left at the
  default: torch's bicubic APE resize (rope-vit res2), DINOv3's bf16 periods, the k-bias mask
  (the file's k bias is non-zero), EVA-02's reference grid."""
  assert _logit_errors("ropevit", MIXED_APE, resolutions=("_res2",),
                       ape_resize="bicubic")[0] > 10 * TOL
  assert _logit_errors("eva02", EVA02, resolutions=("",), rope_grid=None)[0] > 10 * TOL
  z = np.load(DINOV3)
  for overrides in (dict(periods_dtype="float32"), dict(qkv_bias="qkv")):
    sd = sdl.load(str(DINOV3))
    model, params, _ = _port("dinov3", sd, **overrides)
    if overrides.get("qkv_bias") == "qkv":   # the unmasked bias, k part included
      for i in range(2):
        params["encoderblock_" + str(i)]["attention"]["qkv"]["bias"] = jnp.asarray(
            sd[f"blocks.{i}.attn.qkv.bias"].reshape(3, 4, 16))
    _, features = _apply(model, params, z["images"])
    assert _relative(features[:, 5:], z["features_patch"]) > 10 * TOL, overrides


def _timm_ropevit(sd):
  """rope-vit's names -> timm's copy (Eva): 4-D rope.freqs, q_bias / v_bias (no k bias)."""
  out = {}
  for k, v in sd.items():
    if k == "freqs":
      out["rope.freqs"] = v.reshape(2, v.shape[1], 4, -1)
    elif k.endswith("attn.qkv.bias"):
      q, _, vb = np.split(v, 3)
      out[k.replace("qkv.bias", "q_bias")], out[k.replace("qkv.bias", "v_bias")] = q, vb
    elif not k.startswith("freqs_t_"):
      out[k] = v
  return out


def _leaves(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_timm_names_give_the_same_model():
  # rope-vit: timm's copy drops the k bias; with it zeroed the two ports are the same model.
  sd = sdl.load(str(MIXED_APE))
  for i in range(2):
    sd[f"blocks.{i}.attn.qkv.bias"][64:128] = 0.0
  naver = family_module("ropevit").convert(sd, num_heads=4)
  timm = family_module("ropevit").convert(_timm_ropevit(sd))      # heads from rope.freqs
  assert timm.model["qkv_bias"] == "qv" and timm.model["num_heads"] == 4
  a, b = _leaves(naver.params), _leaves(timm.params)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  # DINOv3: reg_token, gamma_1/2, q_bias / v_bias; no periods, bias_mask, mask_token.
  sd = sdl.load(str(DINOV3))
  timm_sd = {}
  for k, v in sd.items():
    if k.endswith((".periods", ".bias_mask")) or k == "mask_token":
      continue
    if k.endswith("attn.qkv.bias"):
      q, _, vb = np.split(v, 3)
      timm_sd[k.replace("qkv.bias", "q_bias")], timm_sd[k.replace("qkv.bias", "v_bias")] = q, vb
      continue
    k = k.replace("storage_tokens", "reg_token").replace("ls1.gamma", "gamma_1")
    timm_sd[k.replace("ls2.gamma", "gamma_2")] = v
  orig = family_module("dinov3").convert(sd, image_size=32)
  timm = family_module("dinov3").convert(timm_sd, num_heads=4, image_size=32)
  assert timm.model["periods_dtype"] == "float32"   # timm computes them in float32
  a, b = _leaves(orig.params), _leaves(timm.params)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_eva02_fused_packed_and_original_names_reproduce_the_logits():
  sd = sdl.load(str(EVA02))
  fused, original = {}, {}
  for k, v in sd.items():
    b = k.rsplit("attn.", 1)[0] if "attn." in k else k.rsplit("mlp.", 1)[0]
    if k.endswith("attn.q_proj.weight"):
      fused[b + "attn.qkv.weight"] = np.concatenate(
          [v, sd[b + "attn.k_proj.weight"], sd[b + "attn.v_proj.weight"]])
    elif k.endswith(("attn.k_proj.weight", "attn.v_proj.weight")):
      pass
    elif k.endswith("attn.q_proj.bias"):
      fused[b + "attn.q_bias"] = v
    elif k.endswith("attn.v_proj.bias"):
      fused[b + "attn.v_bias"] = v
    elif k.endswith(("mlp.fc1_g.weight", "mlp.fc1_g.bias")):
      p = k.rsplit(".", 1)[1]
      fused[b + f"mlp.fc1.{p}"] = np.concatenate([v, sd[b + f"mlp.fc1_x.{p}"]])  # gate first
    elif "mlp.fc1_x." not in k:
      fused[k] = v
    name = (k.replace("mlp.fc1_g", "mlp.w1").replace("mlp.fc1_x", "mlp.w2")
            .replace("mlp.fc2", "mlp.w3").replace("mlp.norm", "mlp.ffn_ln"))
    original[name] = v
  assert "blocks.0.mlp.fc1.weight" in fused and "blocks.0.mlp.w1.weight" in original
  for variant in (fused, original):
    assert max(_logit_errors("eva02", EVA02, sd=variant, resolutions=("",))) <= TOL


# ----------------------------------------------------------------------------- the script

sys.path.insert(0, str(ROOT / "scripts"))
import port_checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position


def _save(tmp_path, sd, name="bad.npz"):
  path = tmp_path / name
  np.savez(path, **{f"sd/{k}": v for k, v in sd.items()})
  return str(path)


def _refused(capsys, tmp_path, argv):
  workdir = tmp_path / "out"
  assert port_checkpoint.main(argv + [f"--workdir={workdir}"]) == 1
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1, err
  assert not workdir.exists()                # nothing written
  return err


def test_bad_input_stops_with_one_line_naming_the_keys(capsys, tmp_path):
  err = _refused(capsys, tmp_path, ["--from=vit", f"--input={AXIAL}"])
  assert "--from='vit'" in err and "ropevit, dinov3, eva02" in err
  err = _refused(capsys, tmp_path, ["--from=ropevit", f"--input={DINOV3}"])
  assert "looks like a dinov3 checkpoint" in err and "--from=dinov3" in err
  err = _refused(capsys, tmp_path, ["--from=eva02", f"--input={AXIAL}"])
  assert "looks like a ropevit checkpoint" in err
  sd = sdl.load(str(AXIAL))
  missing = {k: v for k, v in sd.items() if k not in ("blocks.1.norm1.bias", "norm.weight")}
  err = _refused(capsys, tmp_path, ["--from=ropevit", "--num_heads=4",
                                    f"--input={_save(tmp_path, missing)}"])
  assert "missing keys: blocks.1.norm1.bias, norm.weight" in err
  extra = dict(sd, **{"blocks.0.attn.norm.weight": np.ones(64, np.float32)})
  err = _refused(capsys, tmp_path, ["--from=ropevit", "--num_heads=4",
                                    f"--input={_save(tmp_path, extra)}"])
  assert "unexpected keys: blocks.0.attn.norm.weight" in err
  wrong = dict(sd, **{"blocks.1.mlp.fc2.bias": np.zeros(65, np.float32)})
  err = _refused(capsys, tmp_path, ["--from=ropevit", "--num_heads=4",
                                    f"--input={_save(tmp_path, wrong)}"])
  assert "shape mismatch: blocks.1.mlp.fc2.bias [65] (expected [64])" in err
  sd = sdl.load(str(DINOV3))
  sd["blocks.1.attn.qkv.bias_mask"] = np.ones(192, np.float32)   # differs from block 0
  err = _refused(capsys, tmp_path, ["--from=dinov3", f"--input={_save(tmp_path, sd)}"])
  assert "blocks.1.attn.qkv.bias_mask" in err
  # The head's classes must be the dataset's (imagenet2012: 1000, the file: 10).
  err = _refused(capsys, tmp_path, ["--from=ropevit", "--num_heads=4", f"--input={AXIAL}"])
  assert "head.weight has 10 classes" in err
  # RGB weights on a grayscale dataset (10 classes, 1 channel): refused before anything runs.
  err = _refused(capsys, tmp_path, ["--from=ropevit", "--num_heads=4", f"--input={AXIAL}",
                                    "--dataset=fashion_mnist"])
  assert "patch_embed.proj.weight takes 3-channel images, the dataset's have 1" in err


@pytest.fixture(scope="module")
def eva_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("port") / "eva02"
  assert port_checkpoint.main(["--from=eva02", f"--input={EVA02}", f"--workdir={workdir}",
                               "--dataset=cifar10", "--num_heads=4", "--rope_grid=6,6"]) == 0
  return workdir


def test_ported_workdir_is_what_eval_restores(eva_workdir, capsys):
  import eval as eval_script  # pylint: disable=g-import-not-at-top
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  prepared = eval_script.prepare_run(str(eva_workdir), [24, 32, 48], "best", None)
  config, setup = prepared["config"], prepared["setup"]
  assert prepared["candidates"] == [0] and config.data.image_size == 32
  checkpoints, step, state = checkpoint_lib.restore_newest_intact(
      lambda: loop.open_checkpoints(config, str(eva_workdir), read_only=True),
      loop.abstract_state(setup, config.seed), move_damaged=False)
  checkpoints.close()
  assert step == 0
  z = np.load(EVA02)
  logits, _ = _apply(setup.task.model, state["params"], z["images"])
  assert _relative(logits, z["logits"]) <= TOL
  # train.py's init_from on this config: the parameters come back, the optimizer is new.
  zeroed = dict(state, params=jax.tree.map(jnp.zeros_like, state["params"]))
  again = loop._init_from(str(eva_workdir), zeroed, setup)
  a, b = _leaves(again["params"]), _leaves(state["params"])
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  assert jax.tree.structure(again["opt_state"]) == jax.tree.structure(state["opt_state"])
  # A second port into the same workdir is refused (nothing overwritten).
  assert port_checkpoint.main(["--from=eva02", f"--input={EVA02}", f"--workdir={eva_workdir}",
                               "--dataset=cifar10", "--num_heads=4"]) == 1
  assert "already holds a run" in capsys.readouterr().err


def test_init_from_loads_the_parameters_and_a_fresh_head(eva_workdir):
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  ported = family_module("eva02").convert(sdl.load(str(EVA02)), **OPTIONS["eva02"])
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  # A fresh model's parameters (stand-ins: zeros of the right shapes) with 10 classes, as the
  # ported workdir, and with 7 (another dataset): only the head is kept fresh, and only then.
  zeros = jax.tree.map(np.zeros_like, ported.params)
  for classes, kept in ((10, []), (7, ["head/bias", "head/kernel"])):
    fresh = dict(zeros, head={"kernel": np.zeros((64, classes), np.float32),
                              "bias": np.zeros((classes,), np.float32)})
    params, kept_fresh = checkpoint_lib.load_params(str(eva_workdir), fresh, sharding)
    assert kept_fresh == kept
    _, got = _leaves(params), _leaves(ported.params)
    for k, v in _leaves(params).items():
      if "head" not in k or not kept:
        np.testing.assert_array_equal(v, got[k], err_msg=k)
    assert not kept or not np.any(np.asarray(params["head"]["kernel"]))
  # A model without the second block: refused, naming the parameters it lacks.
  shallow = {k: v for k, v in zeros.items() if k != "encoderblock_1"}
  with pytest.raises(ValueError, match=r"init_from=.*encoderblock_1/.* \(not in the model\)"):
    checkpoint_lib.load_params(str(eva_workdir), shallow, sharding)


@pytest.mark.parametrize("key,value,message", [
    ("qkv_bias", "kv", r"model.qkv_bias='kv' is not supported; allowed: \('qkv', 'qv', 'none'\)"),
    ("mlp", "geglu", r"model.mlp='geglu' .* allowed: \('gelu', 'swiglu'\)"),
    ("pool", "avg", r"model.pool='avg' .* 'gap_cls'"),
    ("final_norm", "none", r"model.final_norm='none' .* \('tokens', 'pooled'\)"),
    ("ape_resize", "area", r"model.ape_resize='area' .* 'torch_bicubic_antialias'"),
    ("num_registers", -1, r"model.num_registers=-1 must be an integer >= 0"),
    ("norm_eps", 0.0, r"model.norm_eps=0.0 must be a number > 0"),
    ("rope_grid", [16], r"model.rope_grid=\[16\] must be None or \[rows, cols\]"),
    ("periods_dtype", "bfloat16", r"periods_dtype='bfloat16' is read by the dinov3 encoding only"),
    ("num_heads", 0, r"model.num_heads=0 must be None or a positive integer"),
])
def test_new_model_options_are_checked(key, value, message):
  c = vit.default_config()
  c.encoding = "axial"
  c[key] = value
  with pytest.raises(ValueError, match=message):
    vit.validate_config(c, 224)


def test_configs_written_before_the_porting_options_build_the_same_model():
  c = vit.default_config()
  old = {k: v for k, v in c.to_dict().items() if k not in vit.PORTING_DEFAULTS}
  upgraded = vit.upgrade_config(old)
  assert upgraded.to_dict() == c.to_dict()
  assert vit.model_dims(c) == dict(width=384, depth=12, num_heads=6, head_dim=64, mlp_dim=1536,
                                   patch_size=16)


def test_fine_tuning_decays_exactly_the_kernels_of_every_family():
  """No weight decay on registers, the class token, norms (sub-LN too), biases, LayerScale,
  APE and learned frequencies of the ported models (trainer/optim.py)."""
  from trainer import optim  # pylint: disable=g-import-not-at-top
  for family, path in (("ropevit", MIXED_APE), ("dinov3", DINOV3), ("eva02", EVA02)):
    params = family_module(family).convert(sdl.load(str(path)), **OPTIONS[family]).params
    flat = jax.tree_util.tree_flatten_with_path(optim.decay_mask(params))[0]
    for key_path, decayed in flat:
      assert decayed == (key_path[-1].key == "kernel"), (family, jax.tree_util.keystr(key_path))


def test_init_from_a_directory_without_checkpoints_is_refused_before_compiling(tmp_path):
  from trainer import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from trainer import loop  # pylint: disable=g-import-not-at-top
  import tasks  # pylint: disable=g-import-not-at-top
  from configs import vit_common  # pylint: disable=g-import-not-at-top
  config = vit_common.load("axial", "smoke")
  with config.unlocked():
    config.init_from = str(tmp_path)
  with pytest.raises(ValueError, match=r"init_from=.*: no checkpoints/ directory"):
    loop.build(config, task=tasks.get_task(config))
  with pytest.raises(ValueError, match=r"init_from=.*: no checkpoints/ directory"):
    checkpoint_lib.load_params(str(tmp_path), {}, None)


def test_configs_ported_rebuilds_the_workdir_config_with_init_from(eva_workdir):
  import json  # pylint: disable=g-import-not-at-top
  from configs import ported  # pylint: disable=g-import-not-at-top
  from trainer import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = ported.get_config(str(eva_workdir))
  assert config.init_from == str(eva_workdir)
  written = json.loads((eva_workdir / "config.json").read_text())
  rebuilt = json.loads(config.to_json_best_effort())
  assert workdir_lib.config_changes(written, rebuilt) == {}   # init_from: a run key
  assert rebuilt["model"] == written["model"] and written["init_from"] is None
  with pytest.raises(ValueError, match=r"configs/ported.py:.*: no config.json"):
    ported.get_config(str(eva_workdir / "checkpoints"))
