"""Files written whole (a temporary sibling renamed into place; one object at a URL) and read with
errors that name the file. Part of `rospr_jax.storage`, which re-exports these names."""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import socket
import tempfile
from typing import IO, Any, Iterator

import numpy as np

from rospr_jax.storage import PathLike, as_path, is_url


# --- Writing files whole -----------------------------------------------------------------------------


def umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def tmp_prefix(name: str) -> str:
  """This process's temporary names for `name`: `.<name>.tmp-<host>-<pid>-` (see `remove_leftovers`)."""
  host = hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]
  return f".{name}.tmp-{host}-{os.getpid()}-"


def with_path(e: OSError, path: PathLike) -> OSError:
  """`e` naming `path` when it names no file itself (a full disk: `[Errno 28] ... : 'run/x.json'`)."""
  if not isinstance(e, OSError) or e.errno is None or e.filename is not None:
    return e
  return type(e)(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path))


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
  """A file object whose contents become `path` whole when the block succeeds, or never."""
  if is_url(path):
    buffer = io.StringIO() if "b" not in mode else io.BytesIO()
    yield buffer
    data = buffer.getvalue()
    as_path(path, output=True).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return
  path = os.path.abspath(os.fspath(path).removeprefix("file://"))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(os.path.basename(path)), dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~umask())  # as `open` would, not tempfile's 0600: teammates read runs
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, OSError) and with_path(e, path) is not e:
      raise with_path(e, path) from e
    raise


def write_bytes(path: PathLike, data: bytes) -> None:
  with atomic_file(path, "wb") as f:
    f.write(data)


def write_text(path: PathLike, text: str) -> None:
  """Writes `text` as UTF-8, whole."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, payload: Any, **dumps_kwargs) -> None:
  """Writes `payload` as JSON (strict: NaN and infinities are refused), whole."""
  write_text(path, json.dumps(payload, allow_nan=False, **dumps_kwargs) + "\n")


def save_npy(path: PathLike, array) -> None:
  """Saves an array in .npy format (no pickles), whole."""
  with atomic_file(path, "wb") as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def load_npy(path: PathLike, *, mmap: bool = False) -> np.ndarray:
  """The array in the .npy file `path` (memory-mapped when local and `mmap`); never unpickles."""
  if not is_url(path):
    return np.load(os.fspath(path), mmap_mode="r" if mmap else None, allow_pickle=False)
  return np.load(io.BytesIO(as_path(path).read_bytes()), allow_pickle=False)


def sha256_file(path: PathLike, chunk: int = 1 << 24) -> str:
  digest = hashlib.sha256()
  with as_path(path).open("rb") as f:
    while block := f.read(chunk):
      digest.update(block)
  return digest.hexdigest()


# --- Reading, with errors that name the file -----------------------------------------------------------


def text_lines(path: PathLike, shown: PathLike | None = None) -> Iterator[tuple[int, str]]:
  """(line number, line) of the UTF-8 text file `path`; a byte that is not UTF-8 is refused naming
  `shown` (default `path`), the line and the column.

  Raises:
    FileNotFoundError: no such file (named). ValueError: a line that is not UTF-8.
  """
  shown = shown or path
  try:
    f = as_path(path).open("rb")
  except FileNotFoundError:
    raise FileNotFoundError(f"{shown} does not exist") from None
  with f:
    for line_no, raw in enumerate(f, start=1):
      yield line_no, decode_line(raw, shown, line_no)


def decode_line(raw: bytes, shown: PathLike, line_no: int, *, cut: bool = False) -> str:
  """Line `line_no` of the file `shown` as text; a byte that is not UTF-8 is refused naming the file,
  the line and the column. With `cut` (the line's first bytes only), an incomplete last character is
  left out."""
  decoder = codecs.getincrementaldecoder("utf-8")()
  try:
    return decoder.decode(raw, final=not cut)
  except UnicodeDecodeError as e:
    raise ValueError(f"{shown}: line {line_no} is not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                     f"{len(raw[:e.start].decode('utf-8', 'replace')) + 1}); save the file as UTF-8.") from None


def read_json(path: PathLike, what: str = "") -> Any:
  """The JSON in `path`; one that does not parse is refused naming the file, the line and the column."""
  named = f"{what + ' ' if what else ''}{os.fspath(path)}"
  try:
    return json.loads(as_path(path).read_bytes().decode("utf-8"))
  except json.JSONDecodeError as e:
    raise ValueError(f"{named} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}).") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{named} is not UTF-8 text ({e.reason}).") from None
