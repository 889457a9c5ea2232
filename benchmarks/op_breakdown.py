"""Where a compiled JAX step spends its time, by op kind, from XLA:CPU's own profile.

    seconds, state = op_breakdown.profile(compiled, (state, batch), steps=3)  # {kind: s/step}

`jax.profiler.trace` records one event per executed HLO op (XLA:CPU's thunks carry an `hlo_op`
stat). Each op is classified from the compiled module's text (`compiled.as_text()`): its
opcode, the computation a fusion calls, and the `op_name` metadata that jax's name stack writes
(Flax module paths, and the scopes `models/vit.py` opens: `rope` around the rotary tables and
the q / k rotation, `sdpa` around attention). Kinds, first match wins:

| kind | ops |
|---|---|
| rope | under a `rope` scope (tables, rotation, their gradients) |
| optimizer | outside the model's forward and backward (no `jvp(` in the name): optax's update, the step's norm metrics |
| attention | under an `sdpa` scope: logits, softmax, weighted sum |
| dots | any other op that is or contains a dot / convolution (projections, MLP, patch embedding, head) |
| normalisation | under a module whose name starts with `norm` (LayerNorm / RMSNorm) |
| elementwise | everything else (activations, residual adds, copies, transposes, reductions) |

Why by hand: jax ships the profile reader (`jax.profiler.ProfileData`) but no per-op summary
without TensorBoard's profile plugin, which this project does not depend on. Times are the sum
of op self times divided by the steps, so with two threads running ops side by side the total
can exceed the wall time of a step; the shares are what to compare. Self time: a control-flow
op (`conditional`, `while`) has an event spanning the events of the ops it runs, on the same
thread line, so each event counts its duration minus the events nested in it (`self_times`);
summing whole durations would count a `lax.cond`'s body twice.
"""
import collections
import glob
import re
import tempfile
from typing import Any, Dict, Sequence, Tuple

import jax

KINDS = ("dots", "attention", "normalisation", "elementwise", "rope", "optimizer")

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\((.*)$")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(text: str) -> Dict[str, dict]:
  """Instruction name -> {"opcode", "op_name", "calls", "has_dot"} for every computation."""
  instrs, comp_ops, current = {}, collections.defaultdict(set), None
  for line in text.splitlines():
    m = _COMP.match(line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, opcode, rest = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.findall(r"(?:calls|to_apply|body|condition|branch_computations)=\{?%?([\w.\-, %]+)\}?",
                       rest)
    called = [c.strip().lstrip("%") for group in calls for c in group.split(",") if c.strip()]
    instrs[name] = {"opcode": opcode, "op_name": op_name.group(1) if op_name else "",
                    "calls": called, "comp": current}
    comp_ops[current].add(opcode)

  comp_calls = collections.defaultdict(set)   # computation -> computations its ops call
  for name, info in instrs.items():
    comp_calls[info["comp"]].update(info["calls"])

  def contains_dot(comp, seen):
    if comp in seen:
      return False
    seen.add(comp)
    return bool(comp_ops.get(comp, set()) & {"dot", "convolution"}) or any(
        contains_dot(c, seen) for c in comp_calls.get(comp, ()))

  for info in instrs.values():
    info["has_dot"] = info["opcode"] in ("dot", "convolution") or any(
        contains_dot(c, set()) for c in info["calls"])
  return instrs


def _scope(name: str, scope: str) -> bool:
  """Whether the name stack `name` has a scope `scope` (or starting with it, for `norm*`):
  `.../rope/...`, or `jvp(rope)/...` when the scope is the outermost one of a transform."""
  return re.search(rf"(^|[/(]){scope}([/)]|$)", name) is not None


def classify(info: dict) -> str:
  """One of KINDS for an instruction of `parse_hlo`."""
  name = info["op_name"]
  if _scope(name, "rope"):
    return "rope"
  if name and "jvp(" not in name:
    return "optimizer"
  if _scope(name, "sdpa"):
    return "attention"
  if info["has_dot"]:
    return "dots"
  if _scope(name, r"norm\w*"):
    return "normalisation"
  return "elementwise"


def self_times(events: Sequence[Tuple[float, float, str]]) -> list:
  """`[(op, self ns)]` for one thread line's `[(start_ns, end_ns, op)]`: each event's duration
  minus the durations of the events directly nested in it (a `conditional`'s branch ops)."""
  out, stack = [], []     # stack: indices into out of the events still open, outermost first
  for start, end, op in sorted(events, key=lambda e: (e[0], -e[1])):
    while stack and out[stack[-1]][2] <= start:
      stack.pop()
    if stack:
      out[stack[-1]][1] -= end - start      # the parent's time excludes its child's
    out.append([op, end - start, end])
    stack.append(len(out) - 1)
  return [(op, ns) for op, ns, _ in out]


def op_seconds(compiled: Any, args: Sequence, *, steps: int = 3, donate: bool = True
               ) -> Tuple[Dict[str, float], Any]:
  """`({HLO op name: self seconds per step}, args[0] after the steps)` from a profile of `steps`
  calls of `compiled` (a `jax.jit(...).lower(...).compile()` step). With `donate`, its first
  output replaces `args[0]` between calls (a donated train state, returned so the caller can go
  on)."""
  args = list(args)
  out = compiled(*args)       # warm
  jax.block_until_ready(out)
  if donate:
    args[0] = out[0]
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(steps):
        out = compiled(*args)
        jax.block_until_ready(out)
        if donate:
          args[0] = out[0]
    files = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)
    if not files:
      raise RuntimeError(f"jax.profiler.trace wrote no .xplane.pb under {d}")
    data = jax.profiler.ProfileData.from_file(files[0])
  totals = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      events = [(e.start_ns, e.start_ns + e.duration_ns, dict(e.stats).get("hlo_op"))
                for e in line.events]
      for op, ns in self_times([e for e in events if e[2] is not None]):
        totals[op] += ns * 1e-9 / steps
  return dict(totals), (args[0] if donate else None)


def profile(compiled: Any, args: Sequence, *, steps: int = 3, donate: bool = True
            ) -> Tuple[Dict[str, float], Any]:
  """`({kind: seconds per step}, args[0] after the steps)`; kinds are KINDS, plus
  "unattributed" for ops not found in the module text, if any. Arguments as `op_seconds`."""
  instrs = parse_hlo(compiled.as_text())
  per_op, state = op_seconds(compiled, args, steps=steps, donate=donate)
  totals = collections.Counter()
  for op, seconds in per_op.items():
    info = instrs.get(op)
    totals[classify(info) if info else "unattributed"] += seconds
  result = {k: totals.get(k, 0.0) for k in KINDS}
  if totals.get("unattributed"):
    result["unattributed"] = totals["unattributed"]
  return result, state
