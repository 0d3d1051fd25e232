"""Child process of `kcaps_tflite.micro`: try tensor arena sizes in TFLite Micro.

    python -m kcaps_tflite._arena_probe M.tflite LOW HIGH SOURCE

Finds the smallest arena (multiple of 16) with which TFLite Micro loads `M.tflite` and runs it on
a zero input, knowing that LOW bytes fail (0: nothing known) and HIGH bytes work (0: unknown, so
it first doubles from 64 KiB). Prints `try N` before each attempt and `ok N` or `small N` after
it, then `arena N`. An error of the model prints `error <ErrorType> <message>` (naming SOURCE,
the parent's name for the model) and exits 2.

It runs in its own process because TFLite Micro's native code sometimes crashes (SIGSEGV) instead
of reporting an arena that is a little too small: a kernel's Prepare reads a temporary tensor it
could not allocate. The parent then knows the last `try N` crashed and starts a new child above N.
"""
import sys

import numpy as np

from kcaps_tflite import micro


def _works(data, size, source):
    print(f"try {size}", flush=True)
    try:
        interpreter = micro.MicroInterpreter(data, size, source, _probe=True)
        details = interpreter.input_details
        interpreter.invoke(np.zeros(tuple(details["shape"]), details["dtype"]))  # data-blind
        ok = True
    except micro.ArenaTooSmallError:
        ok = False
    print(f"{'ok' if ok else 'small'} {size}", flush=True)
    return ok


def main(path, low, high, source):
    with open(path, "rb") as f:
        data = f.read()
    if not high:
        size = max(low * 2, 64 * micro.KIB, len(data) // 4) // micro.ARENA_ALIGNMENT * \
            micro.ARENA_ALIGNMENT
        while not _works(data, size, source):
            if size >= micro.MAX_ARENA_BYTES:
                raise micro.ArenaTooSmallError(
                    f"{source}: does not fit even a {micro.MAX_ARENA_BYTES}-byte arena")
            low, size = size, min(size * 2, micro.MAX_ARENA_BYTES)
        high = size
    while high - low > micro.ARENA_ALIGNMENT:
        middle = (low + high) // 2 // micro.ARENA_ALIGNMENT * micro.ARENA_ALIGNMENT
        if middle <= low:
            break
        if _works(data, middle, source):
            high = middle
        else:
            low = middle
    print(f"arena {high}", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    except (micro.MicroOpError, micro.ArenaTooSmallError, RuntimeError, ValueError) as error:
        message = str(error).replace("\n", " ")
        print(f"error {type(error).__name__} {message}", flush=True)
        sys.exit(2)
