"""The file layer: how dgm-run writes its files and reads them back, and how a bad file or a failed write ends.

Every file a run writes goes through `atomic`: a temporary file beside the target, renamed over it once it is
whole, so a full disk, a read-only folder or a kill leaves the file it would have replaced as it was (the last
good checkpoint among them), and the failure is a WriteError naming the file. Every file read back goes through
`reading`, which turns a missing, unreadable, truncated or corrupt file into one UserError line that names it
and says what to do. No torch here: the scripts that read metrics.json or configs import it and start at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from dgm_run.errors import UserError, WriteError

# What readers raise on bytes that are not what they should be: json (ValueError, UnicodeDecodeError among
# them), YAML, torch.load (RuntimeError, pickle's and zipfile's errors), gzip (EOFError, zlib.error; its
# BadGzipFile is an OSError without an errno, as are Pillow's "image file is truncated" and
# UnidentifiedImageError), torchvision's IDX reader (AssertionError, KeyError for an unknown type code).
DAMAGE = (
    ValueError,
    EOFError,
    RuntimeError,
    TypeError,
    AssertionError,
    KeyError,
    zlib.error,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    yaml.YAMLError,
)


def reason(err: BaseException) -> str:
    """The first line of what went wrong: an OS error's own words (No space left on device), else the message."""
    text = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def temporary(path: Path) -> Path:
    """Where `atomic` writes `path` before renaming it: beside it, hidden, and this process's own, so that two
    processes writing one file (a search's jobs, each writing the study's results) never rename each other's."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic(path: Path) -> Iterator[BinaryIO]:
    """A file to write `path` through: it appears whole on leaving the block, or not at all (its folder is made
    if missing). An OSError on the way (a full disk, a read-only folder) becomes a WriteError naming `path`;
    the file it would have replaced is untouched and no temporary file is left, also when anything else
    (a Ctrl-C) stops the write."""
    tmp = temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(f"cannot write {path} ({reason(err)})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # gone already when the rename succeeded


def write_bytes(path: Path, data: bytes) -> None:
    with atomic(path) as f:
        f.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, payload: dict) -> None:
    """`payload` as JSON at `path`, written atomically: readers never see half a file."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def remove(path: Path) -> None:
    """Delete `path`; an OSError (a read-only folder) becomes a WriteError naming it."""
    try:
        path.unlink()
    except OSError as err:
        raise WriteError(f"cannot remove {path} ({reason(err)})") from None


@contextlib.contextmanager
def reading(path: Path, what: str, remedy: str) -> Iterator[None]:
    """Read `path` (a `what`: checkpoint, config, data file, ...) inside the block: its absence, an OS error
    and what a reader raises on damaged bytes become one UserError line naming it, its state and `remedy`.
    Keep the block to the read itself: whatever it raises is blamed on the file."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{what} {path} is missing; {remedy}") from None
    except OSError as err:
        if err.errno is None:  # a reader's complaint about the bytes, not the system's about the file
            raise UserError(f"{what} {path} is corrupt or truncated ({reason(err)}); {remedy}") from None
        raise UserError(f"cannot read {what} {path} ({reason(err)}); {remedy}") from None
    except DAMAGE as err:
        raise UserError(f"{what} {path} is corrupt or truncated ({reason(err)}); {remedy}") from None


def damaged(path: Path, what: str, detail: str, remedy: str) -> UserError:
    """The error of a file that reads but does not hold what it should (a checker's finding, not a reader's)."""
    return UserError(f"{what} {path} is corrupt or truncated ({detail}); {remedy}")


def read_json(path: Path, what: str, remedy: str) -> Any:
    with reading(path, what, remedy):
        return json.loads(path.read_text())


def read_yaml(path: Path, what: str, remedy: str) -> Any:
    with reading(path, what, remedy):
        return yaml.safe_load(path.read_text())


def check_event_files(run_dir: Path, remedy: str) -> list[Path]:
    """The TensorBoard event files of `run_dir`, each checked whole: TensorBoard's reader stops quietly at a
    truncated or corrupt record (a live run's file grows), which would hide every event after it; a finished
    run's file holds whole records only. A damaged or unreadable one is a UserError naming it."""
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow  # TensorBoard's own record reader

    files = sorted(path for path in run_dir.glob("events.out.tfevents.*"))
    for path in files:
        with reading(path, "event file", remedy):
            with open(path, "rb") as f:  # the record reader would call an unreadable file missing
                f.read(1)
            reader = pywrap_tensorflow.PyRecordReader_New(str(path))
            try:
                while True:
                    reader.GetNext()
            except errors.OutOfRangeError:  # the end, after whole records
                pass
            except errors.DataLossError as err:
                raise damaged(path, "event file", err.message, remedy) from None
    return files
