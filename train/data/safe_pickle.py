"""Restricted unpickling: plain containers, numbers, strings, bytes and numpy arrays only.

Feature pickles from the ERC code bases are shared as files from strangers; ``pickle.load`` on
them would run any callable the file names. :func:`load_pickle` resolves only the globals in
:data:`ALLOWED` and refuses everything else with an :class:`InputError` that names the file and
the refused global, before anything is called.

Why each allowed global is safe:
* ``builtins`` containers and scalars (set, frozenset, list, dict, ...) and
  ``collections.OrderedDict`` / ``defaultdict`` build plain data from their arguments.
* numpy's array/dtype/scalar reconstructors (``numpy.core.*`` as written by numpy 1.x and
  Python 2, ``numpy._core.*`` as written by numpy 2) rebuild an array from a shape, a dtype and
  a byte string; an object array's items are themselves unpickled through this same gate.
* ``_codecs.encode`` is how protocol-2 pickles spell ``bytes``; only the latin-1 codec is let
  through, so it can only turn a str into bytes.
"""
from __future__ import annotations

import collections
import importlib
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

from train.common import InputError


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """The only use of ``_codecs.encode`` a data pickle needs: protocol 2's spelling of bytes."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} refused; only latin1 is allowed")
    if not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode on a non-string refused")
    return text.encode("latin1")


def _numpy_attr(submodule: str, name: str) -> Any:
    """numpy.<submodule>.<name> from numpy 2 (``numpy._core``) or numpy 1 (``numpy.core``).

    Resolved directly so that numpy 2 never sees an import of the deprecated ``numpy.core``.
    """
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")


def _numpy_top(name: str) -> Any:
    import numpy

    return getattr(numpy, name)


_BUILTINS = {
    "set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple,
    "bytearray": bytearray, "bytes": bytes, "str": str, "int": int, "float": float,
    "complex": complex, "bool": bool,
}

# (module, name) -> zero-argument resolver. Module names as they appear in the file.
ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("builtins", "__builtin__"):  # __builtin__: Python 2 pickles
    for _name, _obj in _BUILTINS.items():
        ALLOWED[(_mod, _name)] = (lambda o=_obj: o)
ALLOWED[("collections", "OrderedDict")] = lambda: collections.OrderedDict
ALLOWED[("collections", "defaultdict")] = lambda: collections.defaultdict
ALLOWED[("_codecs", "encode")] = lambda: _latin1_encode
for _base in ("numpy.core", "numpy._core"):
    ALLOWED[(f"{_base}.multiarray", "_reconstruct")] = lambda: _numpy_attr("multiarray", "_reconstruct")
    ALLOWED[(f"{_base}.multiarray", "scalar")] = lambda: _numpy_attr("multiarray", "scalar")
    ALLOWED[(f"{_base}.numeric", "_frombuffer")] = lambda: _numpy_attr("numeric", "_frombuffer")
ALLOWED[("numpy", "ndarray")] = lambda: _numpy_top("ndarray")
ALLOWED[("numpy", "dtype")] = lambda: _numpy_top("dtype")


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`ALLOWED`."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module = module
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only resolves :data:`ALLOWED` globals."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        resolver = ALLOWED.get((module, name))
        if resolver is None:
            raise RefusedGlobal(module, name)
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"persistent id {pid!r} refused")


def _load(f: BinaryIO, source: str) -> Any:
    try:
        return RestrictedUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as e:
        raise InputError(
            f"refused to unpickle global {e.module}.{e.name}: only plain containers, numbers, strings "
            "and numpy arrays are allowed (nothing was executed)",
            path=source,
        ) from None
    except MemoryError:  # a corrupted length field: the C unpickler allocates it before reading
        raise InputError("not a readable pickle: a length in it asks for more memory than there is "
                         "(the file is corrupted or not a pickle)", path=source) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OverflowError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"not a readable pickle ({type(e).__name__}: {msg})", path=source) from None


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` through :class:`RestrictedUnpickler` (``encoding="latin1"``).

    Raises:
        InputError: naming ``source`` and, for a refused global, ``module.name``.
    """
    return _load(io.BytesIO(data), source)


def load_pickle(path: str | Path) -> Any:
    """Safely unpickle the file at ``path``, streaming it (community feature files run to GBs)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    try:
        with open(path, "rb") as f:
            return _load(f, str(path))
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path=str(path)) from None
