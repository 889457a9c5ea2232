"""Reader for the IDX file format (MNIST, Fashion-MNIST).

Why our own reader: the only libraries that read these files (tfds' `mnist` builders, keras,
torchvision) either need TensorFlow / PyTorch or download the data themselves; the format is a
16-line job with numpy.

Format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number `0x00 0x00 <dtype> <ndim>`,
then `ndim` big-endian uint32 dimension sizes, then the data in C order, big-endian.
"""
import gzip
import os

import numpy as np

# IDX type code -> big-endian numpy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes) -> np.ndarray:
  """Parses the bytes of an (uncompressed) IDX file.

  Args:
    data: the whole file content.

  Returns:
    An array of the file's shape and (native-endian) dtype, e.g. uint8 [60000, 28, 28] for
    Fashion-MNIST training images or uint8 [60000] for its labels.

  Raises:
    ValueError: if the header is not a valid IDX header or the size does not match it.
  """
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
    raise ValueError(
        f"data: not an IDX file (magic bytes {data[:4].hex()!r}; expected 0000 + a type code"
        f" in {sorted(_DTYPES)} + ndim)")
  dtype, ndim = _DTYPES[data[2]], data[3]
  header_size = 4 + 4 * ndim
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  expected = header_size + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise ValueError(f"data: IDX header says shape {shape} ({expected} bytes), file has "
                     f"{len(data)} bytes")
  array = np.frombuffer(data, dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file, gzip-compressed if its name ends in `.gz`. See `parse_idx`."""
  opener = gzip.open if os.fspath(path).endswith(".gz") else open
  with opener(path, "rb") as f:
    return parse_idx(f.read())
