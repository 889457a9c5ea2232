"""Argument checks shared by the rope modules.

They run on static Python values and shapes only, so they raise before (or during) tracing,
never from inside compiled code, and every message names the argument and what is allowed.
"""
from typing import Any, Iterable, Sequence

import numpy as np


def positive_int(name: str, value: Any) -> int:
  """Returns `value` as an int, or raises if it is not an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  value = int(value)
  if value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value}.")
  return value


def divisible(name: str, value: int, by: int, why: str) -> None:
  if value % by:
    raise ValueError(f"`{name}`={value} must be divisible by {by} ({why}).")


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> None:
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(
        f"`{name}`={value!r} is not supported; allowed: {', '.join(map(repr, allowed))}.")


def ndim_in(name: str, shape: Sequence[int], allowed: Iterable[int], what: str) -> None:
  allowed = tuple(allowed)
  if len(shape) not in allowed:
    raise ValueError(
        f"`{name}` must have {' or '.join(map(str, allowed))} dimensions ({what}), "
        f"got shape {tuple(shape)}.")


def square_blocks(name: str, shape: Sequence[int], ndim: int, what: str) -> None:
  """`shape` has `ndim` dimensions and ends in square `[b, b]` blocks."""
  ndim_in(name, shape, (ndim,), what)
  if shape[-1] != shape[-2]:
    raise ValueError(f"`{name}` blocks must be square, got shape {tuple(shape)}.")


def block_positions(positions_shape: Sequence[int], name: str, shape: Sequence[int]) -> None:
  """`positions [..., L, A]` match the A axes of `name` (`shape[0]`)."""
  if len(positions_shape) < 2 or positions_shape[-1] != shape[0]:
    raise ValueError(f"`positions` must be [..., L, A] with A={shape[0]} (the axes of "
                     f"`{name}` {tuple(shape)}), got {tuple(positions_shape)}.")
