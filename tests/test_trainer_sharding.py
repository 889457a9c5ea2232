"""FSDP: the ("data", "fsdp") mesh, parameter / optimizer-state sharding and checkpoints
across meshes, on the 4 fake CPU devices of conftest.py.

The reference for a sharded step is the same step on the data-parallel mesh (fsdp = 1): SPMD
partitioning must not change the math, only where it runs (equal up to reduction order).
"""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import tasks
from configs import vit_common
from configs import vlm_common
from tasks import classification
from tasks import vlm as vlm_task
from trainer import checkpoint as ckpt_lib
from trainer import loop
from trainer import mesh as mesh_lib
from trainer import sharding as sharding_lib
from trainer import step as step_lib
from trainer import workdir as workdir_lib


def _vit_config(**mesh):
  config = vit_common.load("mixed", "smoke")
  with config.unlocked():
    config.model.depth = 1
    config.mesh.update(mesh)
  return config


def _build(config):
  return loop.build(config, task=tasks.get_task(config))


# --- mesh and rules (no compilation) ---


def test_mesh_shape_defaults_and_errors():
  assert mesh_lib.mesh_shape(None, 4) == (4, 1)                 # old configs: data parallel
  assert mesh_lib.mesh_shape({"data": -1, "fsdp": 4}, 4) == (1, 4)
  assert mesh_lib.mesh_shape({"data": 2, "fsdp": 2}, 4) == (2, 2)
  mesh = mesh_lib.make_mesh(mesh_config={"fsdp": 2})
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  for options, message in (({"fsdp": 3}, r"mesh.fsdp=3 must divide the number of devices \(4\)"),
                           ({"fsdp": 0}, "mesh.fsdp=0 must be >= 1"),
                           ({"data": 3, "fsdp": 2}, r"mesh.data=3 x mesh.fsdp=2 = 6 devices"),
                           ({"data": 0}, "mesh.data=0 must be >= 1"),
                           ({"fsdp": 2.0}, "mesh.fsdp=2.0 must be an integer")):
    with pytest.raises(ValueError, match=message):
      mesh_lib.mesh_shape(options, 4)
  with pytest.raises(ValueError, match="mesh.fsdp=3"):   # at start-up, before compiling
    _build(_vit_config(fsdp=3))


def test_rules_split_the_first_named_divisible_dimension():
  sizes = {"data": 1, "fsdp": 4}
  assert sharding_lib.mesh_spec(P("embed", "mlp"), (8, 12), sizes) == P("fsdp", None)
  assert sharding_lib.mesh_spec(P("mlp", "embed"), (12, 8), sizes) == P(None, "fsdp")
  assert sharding_lib.mesh_spec(P("mlp"), (12,), sizes) == P("fsdp")
  # "embed" (6) is not divisible by 4: the next rule's dimension takes the split ...
  assert sharding_lib.mesh_spec(P("embed", "mlp"), (6, 12), sizes) == P(None, "fsdp")
  # ... and with none divisible the parameter stays whole, and is reported.
  assert sharding_lib.mesh_spec(P("embed", "mlp"), (6, 10), sizes) == P(None, None)
  assert sharding_lib.mesh_spec(P("heads", "rotary"), (8, 8), sizes) == P(None, None)
  assert sharding_lib.mesh_spec(P(), (8, 8), sizes) == P(None, None)
  mesh = mesh_lib.make_mesh(mesh_config={"fsdp": 4})
  specs = {"a": P("embed", "mlp"), "b": P("embed"), "c": P("heads")}
  shapes = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in
            {"a": (8, 12), "b": (6,), "c": (6,)}.items()}
  shardings, unsplit = sharding_lib.param_shardings(specs, shapes, mesh)
  assert shardings["a"].spec == P("fsdp", None) and unsplit == ["b"]   # "c" has no rule


# --- one ViT step: fsdp=4 against data parallelism ---


def _host_state(setup):
  """A train state on the host (numpy) with random parameters: no init program to compile
  (the equality below holds for any parameters), and copies for steps that donate their input.
  """
  shapes = jax.eval_shape(step_lib.make_init_fn(setup.task, setup.tx), jax.random.key(0))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
                        shapes["params"])
  return {"params": params, "opt_state": jax.device_get(setup.tx.init(params)),
          "step": np.zeros((), np.int32), "rng": np.zeros(shapes["rng"].shape, np.uint32)}


@pytest.fixture(scope="module")
def vit_steps():
  """The same first training step on the data-parallel and on the fsdp=4 mesh."""
  setups = {"dp": _build(_vit_config()), "fsdp": _build(_vit_config(fsdp=4))}
  first = _host_state(setups["dp"])
  local = next(setups["dp"].task.train_iterator(0, 0, 1))
  out = {}
  for name, setup in setups.items():
    state = jax.device_put(first, setup.state_sharding)
    before = sharding_lib.bytes_per_device(state["params"])
    state, metrics = loop.jit_train_step(setup)(state, mesh_lib.global_batch(local, setup.mesh))
    out[name] = {"setup": setup, "state": state, "metrics": jax.device_get(metrics),
                 "param_bytes": before, "state_bytes": sharding_lib.bytes_per_device(state)}
  return out


def test_fsdp_step_equals_data_parallel_step(vit_steps):
  dp, fsdp = vit_steps["dp"], vit_steps["fsdp"]
  for key in ("loss", "grad_norm", "update_norm", "param_norm"):
    np.testing.assert_allclose(fsdp["metrics"][key], dp["metrics"][key], rtol=1e-5)
  flat_dp = jax.tree_util.tree_flatten_with_path(jax.device_get(dp["state"]))[0]
  flat_fsdp = jax.tree.leaves(jax.device_get(fsdp["state"]))
  for (path, a), b in zip(flat_dp, flat_fsdp):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path))
  assert fsdp["metrics"]["update_norm"] > 0      # the step did change the parameters


def test_fsdp_splits_parameters_and_optimizer_state(vit_steps):
  fsdp = vit_steps["fsdp"]
  params = fsdp["state"]["params"]
  # Kernels are split along "embed" (their first named dimension in FSDP_RULES).
  assert params["encoderblock_0"]["mlp"]["fc1"]["kernel"].sharding.spec == P("fsdp", None)
  assert params["encoderblock_0"]["mlp"]["fc2"]["kernel"].sharding.spec == P(None, "fsdp")
  mu = fsdp["state"]["opt_state"][1][0].mu       # clip, then LAMB's Adam moments
  assert mu["encoderblock_0"]["mlp"]["fc1"]["kernel"].sharding.spec == P("fsdp", None)
  for key in ("param_bytes", "state_bytes"):
    per_device_dp = set(vit_steps["dp"][key].values())
    per_device = set(fsdp[key].values())
    assert len(per_device_dp) == 1 and len(per_device) == 1     # balanced over devices
    ratio = per_device.pop() / per_device_dp.pop()
    # A quarter, plus the few small parameters that stay whole (the classifier bias of 10,
    # qkv biases [3, heads, kv], position frequencies).
    assert 0.25 <= ratio < 0.28, (key, ratio)


def test_checkpoint_restores_under_another_mesh(vit_steps, tmp_path):
  fsdp = vit_steps["fsdp"]
  saved = jax.device_get(fsdp["state"])
  ckpts = ckpt_lib.Checkpoints(str(tmp_path / "checkpoints"), keep=1, async_save=False)
  ckpts.save(1, fsdp["state"])
  ckpts.wait()
  for other in (vit_steps["dp"]["setup"], _build(_vit_config(data=2, fsdp=2))):
    abstract = loop.abstract_state(other, 0)
    restored = ckpts.restore_checked(1, abstract)
    for a, b, want in zip(jax.tree.leaves(restored), jax.tree.leaves(saved),
                          jax.tree.leaves(abstract)):
      np.testing.assert_array_equal(np.asarray(a), b)
      assert a.sharding.is_equivalent_to(want.sharding, a.ndim)
  ckpts.close()


# --- config keys ---


def test_old_configs_get_the_data_parallel_mesh_and_may_change_it():
  old = _vit_config().to_dict()
  del old["mesh"]
  assert classification.Classification.upgrade_config(old)["mesh"] == mesh_lib.DEFAULTS
  vlm_old = vlm_common.get_config("mrope", "smoke").to_dict()
  del vlm_old["mesh"]
  assert vlm_task.VisionLanguage.upgrade_config(vlm_old)["mesh"] == mesh_lib.DEFAULTS
  # Resuming on another slice / split is not a config change.
  assert workdir_lib.config_changes(_vit_config().to_dict(),
                                    _vit_config(data=2, fsdp=2).to_dict()) == {}


# --- the VLM task: its parameters split too (shapes and lowering only) ---


def test_vlm_state_is_split_over_fsdp():
  config = vlm_common.get_config("mrope", "smoke")
  with config.unlocked():
    config.mesh.fsdp = 4
  setup = _build(config)
  assert isinstance(setup.task, vlm_task.VisionLanguage)
  abstract = loop.abstract_state(setup, 0)

  def per_device_bytes(tree):
    return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
               for x in jax.tree.leaves(tree))

  params = abstract["params"]
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  assert 0.25 <= per_device_bytes(params) / total < 0.27
  # The train step accepts the split state and a batch split over both axes.
  b = config.training.batch_size
  batch = {k: jax.ShapeDtypeStruct((b,) + v.shape[1:], v.dtype,
                                   sharding=mesh_lib.batch_sharding(setup.mesh))
           for k, v in next(setup.task.train_iterator(0, 0, 1)).items()}
  out_state, _ = loop.jit_train_step(setup).lower(abstract, batch).out_info
  assert out_state["params"]["embed"]["embedding"].sharding.spec == \
      abstract["params"]["embed"]["embedding"].sharding.spec
