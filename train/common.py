"""What every floor (train, export, runtime) needs, defined once: bad-input errors and the CLI
wrapper that prints them, atomic file writes, the file hash, and onnxruntime sessions.

* :class:`InputError` and :func:`run_cli`: one-line errors for bad user input;
  :class:`BackendUnavailableError` and :class:`ExportMismatchError` tell why a backend was passed over.
* Atomic writes: an artifact is written under a temporary name beside its destination and
  renamed into place, so an interrupted run never leaves a half-written file that a later run
  would trust. Exactly three functions rename into place: :func:`atomic_file` (one file),
  :func:`atomic_dir` (a whole directory) and :func:`move_into_place` (a file finished elsewhere:
  a streamed recording's ``*.partial`` file, files a library wrote into a temporary directory).
  :func:`write_text_atomic`, :func:`write_bytes_atomic` and :func:`copy_atomic` are shorthands.
* :func:`file_sha256`: the one file hash (memoised by path, size and mtime).
* :func:`make_session`: every onnxruntime session the project opens (text encoder, VAD, voice
  encoder, the exported graph model).

Imports only the standard library; onnxruntime is imported when a session is made.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

# ---------------------------------------------------------------------------------------------
# Errors


class InputError(Exception):
    """Bad input from the user: a file, a config, a model directory, a feature array.

    The message is a single line that names the file (and dialogue, when there is one) and the
    problem, e.g. ``data.pkl: dialogue 'Ses01F_impro01': 12 labels but 11 sentences``.
    """

    def __init__(self, message: str, *, path: str | None = None, dialogue: str | None = None,
                 advice: str | None = None):
        parts = []
        if path:
            parts.append(str(path))
        if dialogue is not None:
            parts.append(f"dialogue {dialogue!r}")
        parts.append(message if not advice else f"{message}; {advice}")
        super().__init__(": ".join(parts))
        self.path = path
        self.dialogue = dialogue
        self.reason = message  # the problem alone: no file name, no advice (for summaries)
        self.advice = advice


class BackendUnavailableError(InputError):
    """An inference backend cannot run on this machine (its library or device is missing); nothing
    is wrong with the model, and a slower backend is the expected fallback."""


class ExportMismatchError(InputError):
    """A model's export (ONNX files) is missing, incomplete or made from another version of the
    model: the fast backends cannot use it until it is exported again."""


def python_m(args: str) -> str:
    """``python -m ARGS`` spelled with the interpreter that is running, so that the advice in a
    message works when pasted: ``.venv/bin/python -m ...`` from the repository root (the README's
    spelling; a bare ``python`` there lacks the project's packages), the interpreter's full path
    in a virtual environment elsewhere, plain ``python`` when no virtual environment is active."""
    if sys.prefix == sys.base_prefix:
        return f"python -m {args}"
    exe = Path(sys.executable)
    try:
        return f"{exe.relative_to(Path.cwd())} -m {args}"
    except (ValueError, OSError):  # not under the working directory (or it is gone)
        return f"{exe} -m {args}"


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn an InputError into ``error: ...`` on stderr and exit code 2.

    ``--debug`` anywhere in argv keeps the traceback instead.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        return int(main(args) or 0)
    except InputError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        sys.stderr.close()
        return 0


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _ordinary_mode(directory: bool = False) -> int:
    """0666 (0777 for a directory) minus the umask: what ``open(path, "w")`` / ``mkdir`` would
    give (mkstemp, mkdtemp and some writers make owner-only files)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def move_into_place(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Rename the finished file ``src`` onto ``dst`` (same file system), with ordinary permissions.

    For files finished elsewhere: a streamed recording's ``*.partial`` file, or files a library
    wrote into a temporary directory beside ``dst``. :func:`atomic_file` ends with this call.
    """
    dst = Path(dst)
    os.chmod(src, _ordinary_mode())
    os.replace(src, dst)
    return dst


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it onto ``path``.

    The temporary name keeps ``path``'s suffix (writers that pick a format by suffix still work).
    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # the bytes reach the disk before the name does
            os.fsync(f.fileno())
        move_into_place(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; when the block succeeds, it replaces
    ``path`` (an existing directory there is removed). On any exception it is removed instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        yield tmp
        os.chmod(tmp, _ordinary_mode(directory=True))
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    with atomic_file(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


# ---------------------------------------------------------------------------------------------
# The file hash

_sha_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, memoised by (path, size, mtime) so identities and export
    manifests are cheap to recompute."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _sha_memo[key] = h.hexdigest()
    return _sha_memo[key]


# ---------------------------------------------------------------------------------------------
# onnxruntime sessions

# Order of preference when the caller names no providers. TensorRT's EP is left out on purpose:
# the export builds its own TensorRT engines (export.trt) and caches them.
_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in _PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]


def make_session(path: str | os.PathLike, *, providers: Sequence[str] | None = None, threads: int | None = None,
                 what: str | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path`` with full graph optimisation.

    ``threads``: intra-op threads (None: onnxruntime's default, one per physical core).
    ``what``: the artifact's name for error messages ("VAD model"). A missing or unreadable file
    is an :class:`InputError` naming it.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed", advice="pip install 'ariigcn[export]'") from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what or 'ONNX file'} not found", path=str(path))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: onnxruntime's warnings about unused initializers are noise here
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers or default_providers()))
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        reason = f"cannot load the {what}" if what else "onnxruntime cannot load it"
        raise InputError(f"{reason}: {str(e).splitlines()[0]}", path=str(path)) from None
