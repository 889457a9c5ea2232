"""Vision-language answering: the decoder of models/vlm.py on data/spatial_qa.py question sets.

The model reads `BOS prefix.. <image tokens> question..` and is trained to continue with the
answer words and EOS (next-token cross-entropy on the answer tokens only). Evaluation is
exact match: greedy decoding with the model's KV cache must reproduce every answer token and
the EOS (tokens after the EOS are not looked at), reported per question type.

Config keys read here (configs/vlm_common.py sets and documents them):
  model.*            models.vlm.default_config() keys; model.scheme picks the rotary scheme.
  data.*             data.spatial_qa.default_config() keys (data.tfds.name set: a tfds
                     image-question-answer dataset, data/vlm_tfds.py).
  eval.conditions    which of spatial_qa.EVAL_CONDITIONS ("as_trained", "larger_grid",
                     "longer_prefix", "multi_image") are evaluated during training; each is
                     an eval set of that name. tasks/vlm_eval.py evaluates all of them.
  eval.batch_size, seed, training.batch_size.

Position ids are built in the input pipeline from the MODEL's scheme settings
(`models.vlm.sequence_positions`), not from data.scheme / data.scheme_options. data.scheme
must still name the position design of model.scheme (models.vlm_rotary.POSITION_SCHEME, e.g.
"spatial_reset" for "mrope_interleave") and data.age must be True exactly for "circle_age":
the data config validates with them (e.g. it rejects Circle-RoPE with video_as="video"), and a
mismatch is a ValueError naming both options.

Loss convention (INTERFACES.md §4): the logits at t predict tokens[:, t+1] and count where
loss_mask[:, t+1]. The training loss is the mean over the answer tokens of the global batch.

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
import functools
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import tasks
from data import spatial_qa
from models import vlm
from models import vlm_rotary
from tasks import base

# model.name -> the VLM implementation (one for now).
MODEL_NAMES = ("vlm",)


def question_types(data_config) -> dict[int, str]:
  """{question_type id: name} of the ids the data can produce."""
  if data_config.tfds.name:
    return {spatial_qa.TFDS_QUESTION_TYPE: "tfds"}
  return dict(enumerate(spatial_qa.QUESTION_TYPES))


def max_answer_tokens(data_config) -> int:
  """Greedy decoding length: the longest answer plus its EOS."""
  if data_config.tfds.name:
    return int(data_config.tfds.max_answer_len) + 1
  return max(spatial_qa.ANSWER_LEN.values()) + 1


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


def check_data_scheme(config: ml_collections.ConfigDict) -> None:
  """data.scheme / data.age must describe model.scheme's position ids (see module doc)."""
  scheme = config.model.scheme
  expected = vlm_rotary.POSITION_SCHEME[scheme]
  if config.data.scheme != expected:
    raise ValueError(
        f"data.scheme={config.data.scheme!r} does not match model.scheme={scheme!r}, whose "
        f"position ids are rope's {expected!r}; set data.scheme={expected!r} (the ids come from "
        "the model settings, data.scheme only drives the data checks).")
  if bool(config.data.age) != (scheme == "circle_age"):
    raise ValueError(f"data.age={config.data.age} must be {scheme == 'circle_age'} for "
                     f"model.scheme={scheme!r} (True only for 'circle_age').")


@tasks.register("vlm")
class VisionLanguage(base.Task):
  """Answer generation on image-question-answer data; see the module docstring."""

  unit = "tokens"

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m, d = config.model, config.data
    if m.name not in MODEL_NAMES:
      raise ValueError(f"model.name={m.name!r} is unknown for task 'vlm'; allowed: "
                       f"{', '.join(MODEL_NAMES)}.")
    try:  # Unknown scheme, head splits, ... with the model's own message.
      vlm.validate_config(m, image_size=d.image_size)
    except ValueError as e:
      raise ValueError(f"config.model: {e}") from None
    check_data_scheme(config)
    try:  # Circle-RoPE with a video, max_len shorter than a sample, ...
      spatial_qa.validate_config(d)
    except ValueError as e:
      raise ValueError(f"config.data: {e}") from None
    if m.vision.patch_size != d.patch_size:
      raise ValueError(f"model.vision.patch_size={m.vision.patch_size} differs from "
                       f"data.patch_size={d.patch_size}.")
    if d.merge_size != (2 if m.vision.merge else 1):
      raise ValueError(f"data.merge_size={d.merge_size} must be {2 if m.vision.merge else 1} "
                       f"with model.vision.merge={m.vision.merge} (the model merges 2x2).")
    unknown = [c for c in config.eval.conditions if c not in spatial_qa.EVAL_CONDITIONS]
    if unknown:
      raise ValueError(f"eval.conditions has {unknown}; allowed: "
                       f"{', '.join(spatial_qa.EVAL_CONDITIONS)}.")
    available = spatial_qa.eval_configs(d)
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
    self.positions_fn = functools.partial(vlm.sequence_positions, m)
    if not d.tfds.name:
      self._check_layouts(d)
    for name, c in self.eval_data.items():
      spatial_qa.validate_config(c)
      try:  # The scheme must place every layout of the condition (e.g. no circle video).
        vlm.validate_config(m, image_size=c.image_size)
        if not c.tfds.name:
          self._check_layouts(c)
      except ValueError as e:
        raise ValueError(f"eval condition {name!r}: {e}") from None
    self.info = spatial_qa.data_info(d)
    self.question_types = question_types(d)
    self.max_new_tokens = max_answer_tokens(d)
    self.model = vlm.model_from_config(m, self.info.vocab_size)
    self._num_train = None
    if d.tfds.name:
      from data import vlm_tfds  # pylint: disable=g-import-not-at-top
      _, self._num_train = vlm_tfds.make_sample_fn(d, seed=config.seed, split="train")

  def _check_layouts(self, data_config) -> None:
    """Builds the position ids of one sample of each question type in the mix."""
    spec = spatial_qa.GenSpec.from_config(data_config)
    for t, p in enumerate(spec.probs):
      if p > 0:
        only_t = tuple(float(i == t) for i in range(len(spec.probs)))
        one = dataclasses.replace(spec, probs=only_t)
        s = spatial_qa.make_sample(one, seed=0, split="eval", index=0)
        self.positions_fn(spatial_qa.layout_segments(s.layout))

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
    return self.model.init({"params": rng}, **self.init_inputs())["params"]

  def train_iterator(self, start_step: int, process_index: int,
                     process_count: int) -> Iterator[dict[str, np.ndarray]]:
    # Batch s of the pipeline is the loop's update s + 1 (both count from start_step).
    return spatial_qa.make_train_iterator(
        self.config.data, global_batch_size=self.config.training.batch_size,
        seed=self.config.seed, start_step=start_step, process_index=process_index,
        process_count=process_count, positions_fn=self.positions_fn)

  def count_units(self, local_batch: Mapping[str, np.ndarray]) -> int:
    return int(np.sum(local_batch["valid"]))  # real (non-padding) tokens

  def _answer_nll(self, params: Any, batch: Mapping[str, jax.Array]):
    """Teacher-forced pass: (nll [B, L-1], argmax-correct [B, L-1], answer mask [B, L-1])."""
    logits = self.model.apply({"params": params}, **vlm.model_inputs(batch))
    targets = batch["tokens"][:, 1:]
    mask = batch["loss_mask"][:, 1:].astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
    hit = (jnp.argmax(logits[:, :-1], -1) == targets).astype(jnp.float32)
    return nll, hit, mask

  def loss_fn(self, params: Any, batch: Mapping[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    del rng  # no dropout in this model
    nll, hit, mask = self._answer_nll(params, batch)
    num = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(nll * mask) / num
    rows = (jnp.sum(mask, 1) > 0).astype(jnp.float32)
    exact = jnp.all((hit > 0) | (mask == 0), axis=1).astype(jnp.float32)
    return loss, {"token_accuracy": jnp.sum(hit * mask) / num,
                  "tf_accuracy": jnp.sum(exact * rows) / jnp.maximum(jnp.sum(rows), 1.0)}

  def eval_sets(self) -> dict[str, spatial_qa.EvalIterable]:
    return {name: spatial_qa.make_eval_iterator(
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
