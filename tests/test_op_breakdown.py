"""benchmarks/op_breakdown.py: HLO ops classified by kind, and a profile that finds them."""
import jax
import jax.numpy as jnp

from benchmarks import op_breakdown


def _step(w, x):
  """A tiny train step with every kind: rope / sdpa scopes, a norm module path, a projection,
  an elementwise activation, and an optimizer update outside the differentiated function."""
  def loss(w):
    h = x @ w                                                  # dots
    with jax.named_scope("norm_attn"):
      h = (h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-6)
    with jax.named_scope("rope"):
      h = h * jnp.cos(jnp.arange(h.shape[-1], dtype=h.dtype))
    with jax.named_scope("sdpa"):
      h = jax.nn.softmax(h @ h.T) @ h
    return jnp.sum(jnp.tanh(h))                                # elementwise
  l, g = jax.value_and_grad(loss)(w)
  return w - 0.1 * g * jnp.sqrt(jnp.sum(g * g)), l             # optimizer


def _compiled():
  w, x = jnp.ones((64, 64)) / 64, jnp.ones((32, 64))
  return jax.jit(_step, donate_argnums=0).lower(w, x).compile(), (w, x)


def test_every_kind_is_found_in_the_module_text():
  compiled, _ = _compiled()
  instrs = op_breakdown.parse_hlo(compiled.as_text())
  kinds = {op_breakdown.classify(i) for i in instrs.values()}
  assert set(op_breakdown.KINDS) <= kinds, kinds
  # A scope wins over the op: the dots inside `sdpa` are attention, not dots.
  sdpa = [i for i in instrs.values() if "sdpa" in i["op_name"] and i["has_dot"]]
  assert sdpa and all(op_breakdown.classify(i) == "attention" for i in sdpa)


def test_classify_rules():
  info = lambda name, dot=False: {"op_name": name, "has_dot": dot, "opcode": "fusion"}
  c = op_breakdown.classify
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/attention/rope/mul")) == "rope"
  assert c(info("jit(s)/transpose(jvp(ViT))/encoderblock_0/attention/sdpa/dot", True)) \
      == "attention"
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/mlp/fc1/dot_general", True)) == "dots"
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/norm_mlp/mul")) == "normalisation"
  assert c(info("jit(s)/jvp(ViT)/encoderblock_0/mlp/gelu")) == "elementwise"
  assert c(info("jit(s)/mul")) == "optimizer"                 # outside forward / backward
  assert c(info("", False)) == "elementwise"                  # no metadata: a copy


def test_profile_times_every_kind_and_returns_the_donated_state():
  compiled, (w, x) = _compiled()
  seconds, w_after = op_breakdown.profile(compiled, (w, x), steps=2)
  assert set(op_breakdown.KINDS) <= set(seconds)
  assert "unattributed" not in seconds
  assert all(seconds[k] > 0 for k in op_breakdown.KINDS), seconds
  assert w_after.shape == (64, 64)


def test_self_times_subtract_nested_events():
  # A conditional [0, 100) runs two fusions [10, 40) and [50, 90), one of them holding a
  # nested op [60, 70); then a plain op [100, 130) starts where the conditional ends.
  events = [(0, 100, "cond"), (10, 40, "f1"), (50, 90, "f2"), (60, 70, "inner"),
            (100, 130, "after")]
  got = dict(op_breakdown.self_times(events[::-1]))        # any order in
  assert got == {"cond": 30, "f1": 30, "f2": 30, "inner": 10, "after": 30}
  assert sum(got.values()) == 130                           # = the line's busy time


def test_a_cond_body_is_counted_once():
  # A dot inside `lax.cond`: the conditional's event spans the dot's on the same thread line.
  # Its self time is its own bookkeeping (microseconds), not the dot's milliseconds again, which
  # summing whole durations counted (the LieRE expm's squarings, twice).
  def f(a, b):
    return jax.lax.cond(a[0, 0] > -1e9, lambda: jnp.tanh(a @ b), lambda: b)
  a = jnp.ones((512, 512)) / 512
  compiled = jax.jit(f).lower(a, a).compile()
  instrs = op_breakdown.parse_hlo(compiled.as_text())
  per_op, _ = op_breakdown.op_seconds(compiled, (a, a), steps=3, donate=False)
  cond = sum(t for op, t in per_op.items() if instrs[op]["opcode"] == "conditional")
  body = sum(t for op, t in per_op.items() if instrs[op]["has_dot"]
             and instrs[op]["opcode"] != "conditional")
  assert any(instrs[op]["opcode"] == "conditional" for op in per_op), per_op
  assert body > 0 and cond < 0.25 * body, per_op
