"""Reader for MNIST-format idx files (`*-idx3-ubyte`, optionally gzip-compressed)."""
import gzip
import os

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read one idx file into a numpy array; gzip is detected from the file's first bytes.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file is not a valid idx file (bad magic number, truncated data), with the
        path and what was wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"idx file not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"corrupt gzip in idx file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"not an idx file (bad magic number {raw[:4].hex() or 'empty'}): {path}")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"truncated idx header ({len(raw)} bytes, {ndim} dimensions): {path}")
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"idx file {path} declares shape {shape} ({expected} bytes of data) but holds "
            f"{len(raw) - header} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx(directory, prefix, kind):
    """Path of `{prefix}-{kind}-idx?-ubyte[.gz]` in `directory` (kind: images or labels)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"idx directory not found: {directory}")
    for name in sorted(os.listdir(directory)):
        stem = name[:-3] if name.endswith(".gz") else name
        if stem.startswith(f"{prefix}-{kind}-idx") and stem.endswith("-ubyte"):
            return os.path.join(directory, name)
    raise FileNotFoundError(
        f"no {prefix}-{kind}-idx*-ubyte[.gz] file in {directory} (found: {sorted(os.listdir(directory))})")


def load_idx_split(directory, prefix="t10k"):
    """Images `(n, h, w)` uint8 and labels `(n,)` of one split (`train` or `t10k`) of a directory."""
    images = read_idx(find_idx(directory, prefix, "images"))
    labels = read_idx(find_idx(directory, prefix, "labels"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"idx split {prefix!r} in {directory}: expected images (n, h, w) and labels (n,), got "
            f"{images.shape} and {labels.shape}")
    return images, labels
