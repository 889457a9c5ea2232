"""Vision-language answering: the decoder of models/vlm.py on data/vlm_pipeline.py question sets.

The model reads `BOS prefix.. <image tokens> question..` and is trained to continue with the
answer words and EOS (next-token cross-entropy on the answer tokens only). Evaluation is
exact match: greedy decoding with the model's KV cache must reproduce every answer token and
the EOS (tokens after the EOS are not looked at), reported per question type.

Config keys read here (configs/vlm_common.py sets and documents them):
  model.*            models.vlm.default_config() keys; model.scheme picks the rotary scheme
                     (a name of models/vlm_schemes.py SCHEMES), the one place it is stated.
  data.*             data.vlm_pipeline.default_config() keys (data.tfds.name set: a tfds
                     image-question-answer dataset, data/vlm_tfds.py).
  eval.conditions    which of vlm_pipeline.EVAL_CONDITIONS ("as_trained", "larger_grid",
                     "longer_prefix", "multi_image") are evaluated during training; each is
                     an eval set of that name. tasks/vlm_eval.py evaluates all of them.
  eval.batch_size, seed, training.batch_size.

Position ids are built in the input pipeline by the position function of model.scheme's
registry entry (`models.vlm_schemes.positions_fn(config.model)`); the data config has no
scheme. Configs written before this (with data.scheme / data.scheme_options / data.age) load
through `upgrade_config`, which the task applies to the config it is given.

Training randomness of a scheme (e.g. a scale drawn per step) comes from the step key, passed
to the model as the "scheme" rng in `loss_fn` only (evaluation and decoding are deterministic).

Loss convention (the batch keys of data.vlm_pipeline.Collator): the logits at t predict
tokens[:, t+1] and count where loss_mask[:, t+1]. The training loss is the mean over the
answer tokens of the global batch.

Eval metrics (sums over the valid rows of a batch; the loop divides every key by "count"):
  accuracy          exact match of greedy decoding.
  tf_accuracy       exact match under teacher forcing (argmax at every answer position).
                    Greedy decoding reproduces the answer iff teacher forcing does, so the two
                    agree up to float rounding of the cached decoder; a gap flags a bug.
  loss              mean answer-token cross-entropy per example.
  n/<type>          examples of question type <type>   (in metrics.jsonl: their share),
  correct/<type>    ... answered exactly               (in metrics.jsonl: share of all rows);
                    per-type accuracy = correct/<type> / n/<type> (`per_type_accuracy`).
"""
import dataclasses
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import tasks
from data import spatial_scenes
from data import vlm_pipeline
from models import vlm
from models import vlm_schemes
from tasks import base
from trainer import mesh as mesh_lib

# model.name -> the VLM implementation (one for now).
MODEL_NAMES = ("vlm",)


def question_types(data_config) -> dict[int, str]:
  """{question_type id: name} of the ids the data can produce."""
  if data_config.tfds.name:
    return {spatial_scenes.TFDS_QUESTION_TYPE: "tfds"}
  return dict(enumerate(spatial_scenes.QUESTION_TYPES))


def max_answer_tokens(data_config) -> int:
  """Greedy decoding length: the longest answer plus its EOS."""
  if data_config.tfds.name:
    return int(data_config.tfds.max_answer_len) + 1
  return max(spatial_scenes.ANSWER_LEN.values()) + 1


def per_type_accuracy(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
  """{type: accuracy} from eval metrics holding `correct/<type>` and `n/<type>`.

  Works on raw sums (vlm_eval) and on the loop's count-divided values (the ratio is the same).
  Types without examples are left out.
  """
  out = {}
  for key, n in metrics.items():
    if key.startswith(prefix + "n/") and n > 0:
      name = key[len(prefix) + 2:]
      out[name] = float(metrics[f"{prefix}correct/{name}"]) / float(n)
  return out


# Data keys of configs written before the scheme was stated once (model.scheme); their
# values were derived from model.scheme, so they are dropped (after checking they agreed).
LEGACY_DATA_KEYS = ("scheme", "scheme_options", "age")


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A VLM config of any version in the current form (a copy; `config` is not changed).

  Old configs (and run directories' config.json) stated the position design a second time as
  data.scheme (+ data.scheme_options, data.age). They are dropped; a data.scheme / data.age
  that disagrees with model.scheme is a ValueError (such a run never trained: the task
  refused it). Missing newer model keys take their defaults (model.attention_impl "xla"), and
  so do missing newer data keys (question_mix.video_elapsed 0, the clip settings), which
  leave the data of such a config as it was, and the mesh (trainer.mesh.DEFAULTS: pure data
  parallelism, as those runs trained).
  """
  old = config.to_dict()
  data = old.get("data", {})
  legacy = {k: data.pop(k) for k in LEGACY_DATA_KEYS if k in data}
  if legacy:
    entry = vlm_schemes.SCHEMES.get(old["model"]["scheme"])
    if "scheme" in legacy and legacy["scheme"] != entry.design:
      raise ValueError(
          f"data.scheme={legacy['scheme']!r} (an old key) disagrees with "
          f"model.scheme={old['model']['scheme']!r}, whose position design is "
          f"{entry.design!r}; remove data.scheme (model.scheme decides the ids).")
    if "age" in legacy and bool(legacy["age"]) != (entry.alt_design is not None):
      raise ValueError(
          f"data.age={legacy['age']} (an old key) disagrees with "
          f"model.scheme={old['model']['scheme']!r}; remove data.age.")
  model_defaults = vlm.default_config().to_dict()
  for key in ("attention_impl",):
    old.setdefault("model", {}).setdefault(key, model_defaults[key])
  data_defaults = vlm_pipeline.default_config().to_dict()
  if "data" in old:
    for key in ("clip_min_frames", "clip_max_frames", "clip_seconds_per_frame"):
      old["data"].setdefault(key, data_defaults[key])
    if "question_mix" in old["data"]:
      for t in spatial_scenes.OPT_IN_TYPES:
        old["data"]["question_mix"].setdefault(t, 0.0)
  if "training" in old:  # A full run config (not a model / data part alone).
    old = mesh_lib.upgrade_config(old)  # Before config.mesh: pure data parallelism.
  new = ml_collections.ConfigDict(old)
  if config.is_locked:
    new.lock()
  return new


@tasks.register("vlm")
class VisionLanguage(base.Task):
  """Answer generation on image-question-answer data; see the module docstring."""

  unit = "tokens"

  @staticmethod
  def upgrade_config(config: dict) -> dict:
    return upgrade_config(ml_collections.ConfigDict(config)).to_dict()

  def __init__(self, config: ml_collections.ConfigDict):
    config = upgrade_config(config)
    super().__init__(config)
    m, d = config.model, config.data
    if m.name not in MODEL_NAMES:
      raise ValueError(f"model.name={m.name!r} is unknown for task 'vlm'; allowed: "
                       f"{', '.join(MODEL_NAMES)}.")
    try:  # Unknown scheme, head splits, ... with the model's own message.
      vlm.validate_config(m, image_size=d.image_size)
    except ValueError as e:
      raise ValueError(f"config.model: {e}") from None
    self.scheme = vlm_schemes.SCHEMES.get(m.scheme)
    try:  # max_len shorter than a sample, ...
      vlm_pipeline.validate_config(d)
    except ValueError as e:
      raise ValueError(f"config.data: {e}") from None
    if m.vision.patch_size != d.patch_size:
      raise ValueError(f"model.vision.patch_size={m.vision.patch_size} differs from "
                       f"data.patch_size={d.patch_size}.")
    if d.merge_size != (2 if m.vision.merge else 1):
      raise ValueError(f"data.merge_size={d.merge_size} must be {2 if m.vision.merge else 1} "
                       f"with model.vision.merge={m.vision.merge} (the model merges 2x2).")
    unknown = [c for c in config.eval.conditions if c not in vlm_pipeline.EVAL_CONDITIONS]
    if unknown:
      raise ValueError(f"eval.conditions has {unknown}; allowed: "
                       f"{', '.join(vlm_pipeline.EVAL_CONDITIONS)}.")
    available = vlm_pipeline.eval_configs(d, places_video=self.scheme.places_video)
    missing = [c for c in config.eval.conditions if c not in available]
    if missing:
      raise ValueError(f"eval.conditions has {missing}, which this data (tfds.name="
                       f"{d.tfds.name!r}) does not have; available: {', '.join(available)}.")
    self.eval_data = {name: available[name] for name in config.eval.conditions}
    # Every sequence the model will see: the training data and each evaluated condition.
    lengths = {"data.max_len (training)": d.max_len}
    lengths.update({f"eval condition {n!r}": c.max_len for n, c in self.eval_data.items()})
    for what, length in lengths.items():
      if length > m.max_len:
        raise ValueError(f"model.max_len={m.max_len} is shorter than the sequences of {what} "
                         f"({length} tokens); raise model.max_len.")
    self.positions_fn = vlm_schemes.positions_fn(m)
    if not d.tfds.name:
      try:  # The scheme must place every layout (e.g. Circle-RoPE and video_as="video").
        self._check_layouts(d)
      except ValueError as e:
        raise ValueError(f"config.data (video_as={d.video_as!r}): {e}") from None
    for name, c in self.eval_data.items():
      vlm_pipeline.validate_config(c)
      try:  # The scheme must place every layout of the condition (e.g. no circle video).
        vlm.validate_config(m, image_size=c.image_size)
        if not c.tfds.name:
          self._check_layouts(c)
      except ValueError as e:
        raise ValueError(f"eval condition {name!r}: {e}") from None
    self.info = vlm_pipeline.data_info(d)
    self.question_types = question_types(d)
    self.max_new_tokens = max_answer_tokens(d)
    self.model = vlm.model_from_config(m, self.info.vocab_size)
    self._num_train = None
    if d.tfds.name:
      from data import vlm_tfds  # pylint: disable=g-import-not-at-top
      _, self._num_train = vlm_tfds.make_sample_fn(d, seed=config.seed, split="train")

  def _check_layouts(self, data_config) -> None:
    """Builds the position ids of one sample of each question type in the mix."""
    spec = spatial_scenes.GenSpec.from_config(data_config)
    for t, p in enumerate(spec.probs):
      if p > 0:
        only_t = tuple(float(i == t) for i in range(len(spec.probs)))
        one = dataclasses.replace(spec, probs=only_t)
        s = spatial_scenes.make_sample(one, seed=0, split="eval", index=0)
        self.positions_fn(vlm_pipeline.layout_segments(s.layout))

  @property
  def num_train_examples(self) -> int | None:
    return self._num_train  # None for the endless synthetic data: durations in steps.

  def init_inputs(self) -> dict[str, np.ndarray]:
    """One all-zero sample with the model's input keys (the shapes of `vlm.dummy_inputs`)."""
    d = self.config.data
    s, n, length = d.image_size, d.max_images, d.max_len
    return {"tokens": np.zeros((1, length), np.int32),
            "images": np.zeros((1, n, s, s, 3), np.float32),
            "image_valid": np.ones((1, n), bool),
            "positions": np.zeros((1, length, 3), np.float32),
            "positions_alt": np.zeros((1, length, 3), np.float32),
            "valid": np.ones((1, length), bool)}

  def init_params(self, rng: jax.Array) -> Any:
    # Unboxed: plain arrays (the checkpoint format); the logical axis names are available
    # from `vlm.init_params(..., boxed=True)` for sharding rules.
    return vlm.init_params(self.model, rng, self.init_inputs())

  def param_logical_specs(self) -> Any:
    boxed = jax.eval_shape(lambda key: vlm.init_params(self.model, key, self.init_inputs(),
                                                       boxed=True), jax.random.key(0))
    return nn.get_partition_spec(boxed)

  def train_iterator(self, start_step: int, process_index: int,
                     process_count: int) -> Iterator[dict[str, np.ndarray]]:
    # Batch s of the pipeline is the loop's update s + 1 (both count from start_step).
    return vlm_pipeline.make_train_iterator(
        self.config.data, global_batch_size=self.config.training.batch_size,
        seed=self.config.seed, start_step=start_step, process_index=process_index,
        process_count=process_count, positions_fn=self.positions_fn)

  def count_units(self, local_batch: Mapping[str, np.ndarray]) -> int:
    return int(np.sum(local_batch["valid"]))  # real (non-padding) tokens

  def _answer_nll(self, params: Any, batch: Mapping[str, jax.Array], rng=None):
    """Teacher-forced pass: (nll [B, L-1], argmax-correct [B, L-1], answer mask [B, L-1]).

    `rng`: the training step's key, the "scheme" rng of schemes with training randomness.
    """
    rngs = {} if rng is None else {"scheme": rng}
    logits = self.model.apply({"params": params}, **vlm.model_inputs(batch), rngs=rngs)
    targets = batch["tokens"][:, 1:]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
    hit = (jnp.argmax(logits[:, :-1], -1) == targets).astype(jnp.float32)
    return nll, hit, mask

  def loss_fn(self, params: Any, batch: Mapping[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    nll, hit, mask = self._answer_nll(params, batch, rng)  # rng: the scheme's, if it uses one
    num = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(nll * mask) / num
    rows = (jnp.sum(mask, 1) > 0).astype(jnp.float32)
    exact = jnp.all((hit > 0) | (mask == 0), axis=1).astype(jnp.float32)
    return loss, {"token_accuracy": jnp.sum(hit * mask) / num,
                  "tf_accuracy": jnp.sum(exact * rows) / jnp.maximum(jnp.sum(rows), 1.0)}

  def eval_sets(self) -> dict[str, vlm_pipeline.EvalIterable]:
    return {name: vlm_pipeline.make_eval_iterator(
        c, batch_size=self.config.eval.batch_size, process_index=jax.process_index(),
        process_count=jax.process_count(), positions_fn=self.positions_fn)
            for name, c in self.eval_data.items()}

  def greedy_answers(self, params: Any, batch: Mapping[str, jax.Array]) -> jax.Array:
    """int32 [B, max_new_tokens]: greedy continuation of each prompt (KV cache); traceable.

    `models.vlm.greedy_decode` is the jit-able core of `models.vlm.generate` (whose host-side
    argument checks cannot run on traced arrays; the task checked every sequence length
    against model.max_len at start-up). A decoded token can only fall past the cache after
    the reference EOS (answers + EOS fit in the sequence), where nothing is compared.
    """
    tokens, _ = vlm.greedy_decode(
        self.model, params, vlm.model_inputs(batch), batch["prompt_len"],
        batch["next_position"], batch["next_position_alt"],
        max_new_tokens=self.max_new_tokens)
    return tokens

  def eval_step(self, params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    nll, hit, mask = self._answer_nll(params, batch)
    valid = (batch["question_type"] >= 0).astype(jnp.float32)  # -1: padding row
    n_ans = jnp.maximum(jnp.sum(mask, 1), 1.0)
    tf_exact = jnp.all((hit > 0) | (mask == 0), axis=1)
    # Greedy answer k sits at sequence index prompt_len + k; compare where loss_mask is set.
    length = batch["tokens"].shape[1]
    idx = batch["prompt_len"][:, None] + jnp.arange(self.max_new_tokens)[None, :]
    inside = idx < length
    idx = jnp.minimum(idx, length - 1)
    ref = jnp.take_along_axis(batch["tokens"], idx, axis=1)
    ref_mask = jnp.take_along_axis(batch["loss_mask"], idx, axis=1) & inside
    generated = self.greedy_answers(params, batch)
    exact = jnp.all((generated == ref) | ~ref_mask, axis=1).astype(jnp.float32) * valid
    out = {"count": jnp.sum(valid), "accuracy": jnp.sum(exact),
           "tf_accuracy": jnp.sum(tf_exact.astype(jnp.float32) * valid),
           "loss": jnp.sum(jnp.sum(nll * mask, 1) / n_ans * valid)}
    for i, name in self.question_types.items():
      is_type = (batch["question_type"] == i).astype(jnp.float32)
      out[f"n/{name}"] = jnp.sum(is_type)
      out[f"correct/{name}"] = jnp.sum(exact * is_type)
    return out
