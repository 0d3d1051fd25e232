"""Reading and writing deployment files: checked `.tflite` reads, all-or-nothing writes.

Every file this package writes goes to a temporary file in the destination's directory first and
is renamed over the destination only once it is complete, so a failure never leaves a
half-written model, header or report behind.

>>> import os, tempfile
>>> from kcaps_tflite import files
>>> path = os.path.join(tempfile.mkdtemp(), "model.tflite")
>>> files.read_tflite(path)
Traceback (most recent call last):
...
FileNotFoundError: TFLite model not found: ...model.tflite
"""
import contextlib
import os
import pathlib
import tempfile

# Bytes 4-8 of every TFLite flatbuffer (the schema's `file_identifier`).
TFLITE_IDENTIFIER = b"TFL3"


class TFLiteFileError(ValueError):
    """A file that is not a readable TFLite model (truncated, corrupt, or something else)."""


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to `path`; rename it to `path` only if the block succeeds."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield pathlib.Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes(path, data):
    """Write `data` to `path` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(data))
    return pathlib.Path(path)


def write_text(path, text):
    """Write `text` to `path` atomically (UTF-8); return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return pathlib.Path(path)


def check_tflite_bytes(data, source="model"):
    """Raise `TFLiteFileError` naming `source` unless `data` looks like a TFLite flatbuffer."""
    data = bytes(data)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise TFLiteFileError(
            f"{source}: not a TFLite model ({len(data)} bytes; a .tflite flatbuffer carries the "
            f"identifier {TFLITE_IDENTIFIER!r} at bytes 4-8, found {data[4:8]!r}); the file is "
            f"truncated, corrupt or of another format")
    return data


def read_tflite(path):
    """The bytes of a `.tflite` file, checked: FileNotFoundError / TFLiteFileError name the path.

    The check here is the flatbuffer identifier; a file that has the identifier but is truncated
    is caught when an interpreter first loads it (`kcaps_tflite.verify.load_interpreter`), again
    with the path in the message.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TFLite model not found: {path}")
    return check_tflite_bytes(path.read_bytes(), source=str(path))


def model_bytes(model, source=None):
    """`model` as bytes: a path to a `.tflite` file (read and checked) or bytes (checked)."""
    if isinstance(model, (str, os.PathLike)):
        return read_tflite(model), str(model)
    return check_tflite_bytes(model, source or "model bytes"), source or "model bytes"
