"""A small word-level tokenizer with a closed vocabulary and a byte fallback.

Nothing is downloaded: the vocabulary is a list of words given by the caller
(`data.spatial_scenes.WORDS` for the synthetic task). Text is normalised (lower
case, split into runs of letters/digits and single punctuation marks); a known
word is one token, and every maximal run of unknown words is spelled as UTF-8
byte tokens (with the byte of " " between two unknown words), so any text can
be encoded and `decode(encode(text)) == normalize(text)` always holds.

Ids (fixed, whatever the vocabulary):
  0 PAD, 1 BOS, 2 EOS, 3 IMAGE (one placeholder per visual token),
  4 VISION_START, 5 VISION_END, 6 .. 261 the 256 byte tokens,
  262 .. the vocabulary words in the given order.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

PAD = 0
BOS = 1
EOS = 2
IMAGE = 3
VISION_START = 4
VISION_END = 5
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<image>", "<vision_start>",
                  "<vision_end>")
NUM_SPECIAL = len(SPECIAL_TOKENS)
BYTE_OFFSET = NUM_SPECIAL
NUM_BYTES = 256
WORD_OFFSET = BYTE_OFFSET + NUM_BYTES

# A word is a run of letters/digits; any other non-space character stands alone.
_WORD_RE = re.compile(r"[^\W_]+|[^\w\s]|_", re.UNICODE)


def split_words(text: str) -> list[str]:
  """Lower-cases `text` and splits it into words and punctuation marks."""
  return _WORD_RE.findall(text.lower())


def normalize(text: str) -> str:
  """The text that `decode(encode(text))` gives back: words joined by spaces."""
  return " ".join(split_words(text))


class Tokenizer:
  """Closed-vocabulary word tokenizer with a byte fallback.

  Attributes:
    words: the vocabulary words, in id order (id = WORD_OFFSET + index).
    vocab_size: number of ids (specials + 256 bytes + words).
  """

  def __init__(self, words: Sequence[str]):
    words = list(words)
    bad = [w for w in words if split_words(w) != [w]]
    if bad:
      raise ValueError(
          f"words must be lower-case single words or punctuation marks "
          f"(as split_words returns them); got {bad[:5]}")
    if len(set(words)) != len(words):
      dups = sorted({w for w in words if words.count(w) > 1})
      raise ValueError(f"words has duplicates: {dups[:5]}")
    self.words = tuple(words)
    self._ids = {w: WORD_OFFSET + i for i, w in enumerate(words)}
    self.vocab_size = WORD_OFFSET + len(words)

  def word_id(self, word: str) -> int:
    """The id of one vocabulary word (KeyError if it is not in the vocab)."""
    return self._ids[word]

  def encode(self, text: str | Iterable[str]) -> list[int]:
    """Encodes text (a string, or already split words) to ids, no BOS/EOS.

    Args:
      text: a string (normalised with `split_words`) or a sequence of words.

    Returns:
      list of int ids.
    """
    words = split_words(text) if isinstance(text, str) else list(text)
    ids = []
    unknown = []  # pending run of unknown words, spelled as bytes together

    def flush():
      if unknown:
        ids.extend(BYTE_OFFSET + b for b in " ".join(unknown).encode("utf-8"))
        unknown.clear()

    for w in words:
      i = self._ids.get(w)
      if i is None:
        unknown.append(w)
      else:
        flush()
        ids.append(i)
    flush()
    return ids

  def encode_array(self, text: str | Iterable[str]) -> np.ndarray:
    """`encode` as an int32 array [n]."""
    return np.asarray(self.encode(text), np.int32)

  def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
    """Decodes ids to text; a run of byte tokens becomes one UTF-8 string.

    Args:
      ids: token ids (ints or an int array).
      skip_special: drop PAD/BOS/EOS/IMAGE/VISION_* ids if True; otherwise
        they appear as "<pad>", "<image>", ...

    Returns:
      the words joined by single spaces.
    """
    out = []
    run = bytearray()
    for i in (int(i) for i in ids):
      if BYTE_OFFSET <= i < WORD_OFFSET:
        run.append(i - BYTE_OFFSET)
        continue
      if run:
        out.append(run.decode("utf-8", errors="replace"))
        run = bytearray()
      if i < NUM_SPECIAL:
        if not skip_special:
          out.append(SPECIAL_TOKENS[i])
      elif i < self.vocab_size:
        out.append(self.words[i - WORD_OFFSET])
      else:
        raise ValueError(f"ids: {i} is outside the vocabulary of size "
                         f"{self.vocab_size}")
    if run:
      out.append(run.decode("utf-8", errors="replace"))
    return " ".join(out)
