"""The restricted unpickler: plain data and numpy arrays load; anything else is refused unexecuted."""
from __future__ import annotations

import builtins
import codecs
import collections
import importlib
import os
import pickle
import subprocess

import numpy as np
import pytest

from train.data.safe_pickle import load_pickle, loads_pickle
from train.common import InputError


def _plain_data():
    return {
        "ints": [1, -2, 3 ** 70], "floats": (1.5, float("inf")), "complex": 1 + 2j, "none": None,
        "bools": [True, False], "str": "caf\xe9 \x92", "bytes": b"\x00\xff", "bytearray": bytearray(b"ab"),
        "set": {1, 2}, "frozenset": frozenset({"a"}), "ordered": collections.OrderedDict(a=1),
        "default": collections.defaultdict(list, {"k": [1]}),
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3), "i64": np.array([1, 2], dtype=np.int64),
        "list_of_arrays": [np.ones(4, dtype=np.float64), np.zeros(4)], "scalar": np.float64(2.5),
        "iscalar": np.int64(7), "empty": np.zeros((0, 5), np.float32), "strs": np.array(["a", "bc"]),
    }


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_and_numpy_round_trip(protocol):
    data = _plain_data()
    if protocol == 0:  # protocol 0 cannot pickle bytes-backed numpy strings portably; keep the rest
        data.pop("strs")
    _assert_same(loads_pickle(pickle.dumps(data, protocol=protocol)), data)


@pytest.mark.parametrize("old,new", [(b"numpy._core.multiarray", b"numpy.core.multiarray"),
                                     (b"numpy._core.multiarray", b"numpy._core.multiarray")])
def test_numpy_core_names_of_both_numpy_generations(old, new):
    """numpy 1.x / Python 2 files say numpy.core.multiarray, numpy 2 says numpy._core: both load."""
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    raw = pickle.dumps([arr, np.float32(3.0)], protocol=2)
    assert old in raw
    loaded = loads_pickle(raw.replace(old, new))
    assert np.array_equal(loaded[0], arr) and loaded[0].dtype == np.float32 and loaded[1] == np.float32(3.0)


def test_python2_style_builtin_names_load():
    raw = pickle.dumps({1, 2}, protocol=2)
    assert b"__builtin__" in raw  # protocol 2 spells builtins the Python 2 way
    assert loads_pickle(raw) == {1, 2}


class _Reduce:
    """An object whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _attacks(target):
    t = str(target)
    return [
        ("system", _Reduce(os.system, f"touch {t}")),
        ("open", _Reduce(builtins.open, t, "w")),
        ("eval", _Reduce(builtins.eval, f"open({t!r}, 'w').close()")),
        ("exec", _Reduce(builtins.exec, f"open({t!r}, 'w').close()")),
        ("Popen", _Reduce(subprocess.Popen, ["touch", t])),
        ("import_module", _Reduce(importlib.import_module, "antigravity")),
        ("getattr", _Reduce(getattr, "text", "upper")),
        ("save", _Reduce(np.save, t, np.zeros(1))),
    ]


@pytest.mark.parametrize("name", ["system", "open", "eval", "exec", "Popen", "import_module", "getattr", "save"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_refused_and_nothing_runs(tmp_path, name, protocol):
    target = tmp_path / "pwned"
    payload = dict(_attacks(target))[name]
    path = tmp_path / "evil.pkl"
    # nested inside ordinary data, as an attacker would hide it in a feature file
    path.write_bytes(pickle.dumps([{"a": [1, 2]}, {"x": payload}], protocol=protocol))
    with pytest.raises(InputError) as e:
        load_pickle(path)
    msg = str(e.value)
    assert str(path) in msg and "refused to unpickle global" in msg and name in msg
    assert "\n" not in msg
    assert not target.exists()


@pytest.mark.parametrize("name", ["system", "open", "eval"])
def test_the_attacks_are_real(tmp_path, name):
    """Control: plain pickle.loads on the same bytes does create the file."""
    target = tmp_path / "pwned"
    raw = pickle.dumps(dict(_attacks(target))[name], protocol=4)
    f = pickle.loads(raw)
    if hasattr(f, "close"):
        f.close()
    assert target.exists()


def test_codecs_encode_only_latin1(tmp_path):
    assert loads_pickle(pickle.dumps(b"\x00\xe9\xff", protocol=2)) == b"\x00\xe9\xff"
    with pytest.raises(InputError, match="not a readable pickle"):
        loads_pickle(pickle.dumps(_Reduce(codecs.encode, "abc", "rot13"), protocol=2), source="x.pkl")


def test_persistent_ids_refused():
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext" if obj == "secret" else None

    import io
    buf = io.BytesIO()
    P(buf, protocol=4).dump(["secret"])
    with pytest.raises(InputError, match="persistent id"):
        loads_pickle(buf.getvalue(), source="p.pkl")


def test_unreadable_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_pickle(tmp_path / "absent.pkl")
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(pickle.dumps(list(range(100)))[:-20])
    with pytest.raises(InputError, match=r"cut\.pkl: not a readable pickle"):
        load_pickle(truncated)
    text = tmp_path / "notes.pkl"
    text.write_text("just some words\n")
    with pytest.raises(InputError, match="not a readable pickle|refused"):
        load_pickle(text)
