"""A name -> entry table with aliases and errors that list the allowed names.

The ViT's position encodings (`models/vit_encodings.py`) and the VLM's rotary schemes
(`models/vlm_schemes.py`) are each one `Registry`: a model, a config file and a data pipeline
look a name up once and receive the entry, which says everything about that encoding; nothing
else branches on the name.

Written by hand because it is twelve lines of dict handling that no library offers with the
two things we need: old names that still resolve (configs and checkpoints written before a
rename keep loading) and a `ValueError` that names the option and the allowed values.
"""
from typing import Generic, Iterator, Mapping, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """Entries by name, plus aliases (old name -> current name).

  Args:
    option: the config option the names are given in (e.g. "model.encoding"), for errors.
  """

  def __init__(self, option: str):
    self.option = option
    self._entries: dict[str, T] = {}
    self._aliases: dict[str, str] = {}

  def register(self, name: str, entry: T, *, aliases: tuple[str, ...] = ()) -> T:
    """Adds `entry` under `name` (and its old `aliases`); a name taken twice is an error."""
    for n in (name,) + tuple(aliases):
      if n in self._entries or n in self._aliases:
        raise ValueError(f"{self.option}: {n!r} is registered twice.")
    self._entries[name] = entry
    self._aliases.update({a: name for a in aliases})
    return entry

  def canonical(self, name: str) -> str:
    """The current name of `name` (itself, or the name an alias stands for)."""
    if name in self._entries:
      return name
    if name in self._aliases:
      return self._aliases[name]
    raise ValueError(f"{self.option}={name!r} is unknown; allowed: "
                     f"{', '.join(map(repr, self._entries))}.")

  def get(self, name: str) -> T:
    """The entry of `name` or of the alias `name`; ValueError listing the names otherwise."""
    return self._entries[self.canonical(name)]

  def names(self) -> tuple[str, ...]:
    """The current names, in registration order (aliases excluded)."""
    return tuple(self._entries)

  def aliases(self) -> Mapping[str, str]:
    return dict(self._aliases)

  def __contains__(self, name: object) -> bool:
    return name in self._entries or name in self._aliases

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def items(self) -> Iterator[tuple[str, T]]:
    return iter(self._entries.items())

  def find(self, name: str) -> Optional[T]:
    """The entry of `name` (or alias), or None."""
    return self.get(name) if name in self else None
