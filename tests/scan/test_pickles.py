"""The opcode walker: agrees with an independent genops stack simulation, resolves what it must, refuses the rest."""

from __future__ import annotations

import collections
import io
import pickle
import pickletools

import pytest

from mirror.scan.allowlist import ALLOWED, canonical, is_allowed
from mirror.scan.pickles import PickleParseError, PickleReader, walk_pickle

from .corpus import _u4


def reference_globals(data: bytes) -> tuple[list[tuple[str, str]], int]:
    """Globals and STOP end by a full stack simulation over ``pickletools.genops`` (strings tracked by value)."""
    stack: list[object] = []
    memo: dict[int, object] = {}
    found: list[tuple[str, str]] = []
    mark = object()
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, attr = arg.split(" ", 1)
            found.append((module, attr))
        if name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            found.append((module, attr))  # type: ignore[arg-type]
            stack.append(None)
            continue
        if name == "STOP":
            return list(dict.fromkeys(found)), pos + 1
        if name in ("MEMOIZE",):
            memo[len(memo)] = stack[-1]
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
            continue
        before = op.stack_before
        if pickletools.markobject in before:
            while stack.pop() is not mark:
                pass
            del stack[len(stack) - before.index(pickletools.markobject):]
        elif name == "POP" and stack and stack[-1] is mark:
            stack.pop()
        else:
            del stack[len(stack) - len(before):]
        for item in op.stack_after:
            stack.append(mark if item is pickletools.markobject else
                         arg if isinstance(arg, str) and name.endswith(("UNICODE", "STRING", "UNICODE8")) else None)
    raise AssertionError("no STOP")


def _objects() -> list[object]:
    import numpy as np
    import torch

    return [
        {"a": list(range(300)), "s": {1, 2}, "f": frozenset("ab"), "od": collections.OrderedDict(k=1)},
        [np.arange(6).reshape(2, 3), np.float64(1.5), b"\x00" * 70_000, "é" * 3],
        {"t": torch.ones(2), "size": torch.Size([3]), "dt": torch.bfloat16, "nested": [{"x": slice(1, 2)}] * 3},
        [collections.Counter("abca"), complex(1, 2), bytearray(b"xy")],
    ]


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("index", range(4))
def test_walker_agrees_with_a_full_stack_simulation(protocol: int, index: int) -> None:
    data = pickle.dumps(_objects()[index], protocol=protocol) + b"tail"
    expected, end = reference_globals(data)
    walk = walk_pickle(PickleReader(io.BytesIO(data)))
    assert sorted(walk.globals) == sorted(expected)
    assert walk.end == end == len(data) - 4


def test_walker_crosses_chunk_boundaries_in_every_argument_kind() -> None:
    big = {"k" * 5000: ["v" * 3000] * 400, "bytes": b"x" * 3_000_000}
    for protocol in range(6):
        data = pickle.dumps([big, collections.OrderedDict()], protocol=protocol)
        walk = walk_pickle(PickleReader(io.BytesIO(data)))
        assert walk.end == len(data)
        assert ("collections", "OrderedDict") in walk.globals


def test_stack_global_from_a_non_string_is_refused() -> None:
    data = b"\x80\x04N" + _u4("system") + b"\x93."  # module would be None
    with pytest.raises(PickleParseError) as e:
        walk_pickle(PickleReader(io.BytesIO(data)))
    assert e.value.rule == "pickle.unresolved-global"


def test_stack_global_after_stack_shuffling_is_refused() -> None:
    data = b"\x80\x04" + _u4("os") + _u4("system") + b"(1" + b"\x93."  # MARK / POP_MARK between
    with pytest.raises(PickleParseError) as e:
        walk_pickle(PickleReader(io.BytesIO(data)))
    assert e.value.rule == "pickle.unresolved-global"


def test_stack_global_survives_frames_and_memoize_between_pushes() -> None:
    data = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00" + _u4("os") + b"\x94\x95\x01\x00\x00\x00\x00\x00\x00\x00" \
        + _u4("system") + b"\x94\x93."
    assert walk_pickle(PickleReader(io.BytesIO(data))).globals == [("os", "system")]


def test_overwritten_memo_slot_is_not_resolved_from_its_old_string() -> None:
    data = b"\x80\x02" + _u4("torch") + b"q\x00" + _u4("Size") + b"q\x01" + b"Nq\x00" + b"h\x00h\x01\x93."
    with pytest.raises(PickleParseError) as e:
        walk_pickle(PickleReader(io.BytesIO(data)))
    assert e.value.rule == "pickle.unresolved-global"


def test_mixing_memoize_and_put_is_refused() -> None:
    data = b"\x80\x04" + _u4("os") + b"\x94" + _u4("x") + b"q\x00."
    with pytest.raises(PickleParseError) as e:
        walk_pickle(PickleReader(io.BytesIO(data)))
    assert e.value.rule == "pickle.memo"


@pytest.mark.parametrize("data,fragment", [
    (b"\x80\x06N.", "unsupported pickle protocol 6"),
    (b"\x80\x02N", "ended before STOP"),
    (b"\x80\x02\xffN.", "invalid opcode 0xff"),
    (b"\x80\x02X\x10\x00\x00\x00abc", "truncated string"),
    (b"\x80\x02B\xff\xff\x00\x00abc.", "truncated payload"),
    (b"\x80\x02cos\nsys", "ended inside a text argument"),
    (b"\x80\x02q", "ends inside an opcode's argument"),
])
def test_malformed_streams_raise_parse_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(PickleParseError, match=fragment) as e:
        walk_pickle(PickleReader(io.BytesIO(data)))
    assert e.value.rule == "pickle.parse"


def test_globals_before_a_parse_error_are_reported() -> None:
    data = b"\x80\x02cos\nsystem\n\xff"
    with pytest.raises(PickleParseError) as e:
        walk_pickle(PickleReader(io.BytesIO(data)))
    assert e.value.globals == [("os", "system")]


def test_protocol0_string_escapes_are_decoded_like_the_unpickler() -> None:
    data = b"S'o\\x73'\np0\nS'system'\np1\n\x80\x04g0\ng1\n\x93."
    # PUT/GET (protocol 0 spelling) then STACK_GLOBAL: module is "os" after escape decoding
    assert walk_pickle(PickleReader(io.BytesIO(data))).globals == [("os", "system")]


def test_allowlist_torch_part_is_torch_weights_only_allowlist() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    ours = {f"{m}.{n}" for m, names in ALLOWED.items() for n in names if m.startswith("torch") or m in (
        "collections", "_codecs")}
    extra = {"builtins.set", "builtins.bytearray", "builtins.complex"}
    assert ours | extra == set(_get_allowed_globals())


@pytest.mark.parametrize("module,name,allowed", [
    ("torch._utils", "_rebuild_tensor_v2", True),
    ("__builtin__", "set", True),
    ("copy_reg", "_reconstructor", False),
    ("torch", "Size.__class__", False),
    ("torch", "_utils._rebuild_tensor_v2", False),
    ("builtins", "getattr", False),
    ("numpy", "load", False),
    ("transformers.training_args", "TrainingArguments", False),
])
def test_allowlist_matches_exact_pairs_after_protocol2_renames(module: str, name: str, allowed: bool) -> None:
    assert is_allowed(module, name) is allowed
    assert canonical("__builtin__", "set") == ("builtins", "set")
