"""The versioned allowlist of pickle globals: the only callables and classes a scanned pickle may name.

Modelled on torch's ``weights_only`` unpickler (``torch/_weights_only_unpickler.py::_get_allowed_globals``
of torch 2.13), written out statically so that a verdict never depends on which torch the scanning
host has installed, plus what real checkpoints need beyond it: the numpy names of ``rng_state.pth``
and numpy object arrays (transformers' Trainer loads those with ``add_safe_globals``), and the builtins
protocol-2 pickles use for bytes, frozensets and slices. ``copyreg._reconstructor``,
``transformers.training_args.TrainingArguments`` and every other class with user-defined
``__setstate__``/``__reduce__`` stay out: anything not listed blocks.

Names are matched as exact (module, name) pairs after Python's own protocol-2 renames
(``__builtin__`` -> ``builtins``), so a dotted ``name`` walking attributes (``Size.__class__``) never
matches. Bump ``ALLOWLIST_VERSION`` on every change: stored verdicts name the version they used.
"""

from __future__ import annotations

import _compat_pickle

ALLOWLIST_VERSION = "2026.1"

_DTYPES = (
    "bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 float16 float32 "
    "float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz float8_e8m0fnu "
    "int1 int2 int3 int4 int5 int6 int7 int8 int16 int32 int64 qint32 qint8 quint2x4 quint4x2 quint8 "
    "uint1 uint2 uint3 uint4 uint5 uint6 uint7 uint8 uint16 uint32 uint64"
).split()
_TYPED = "BFloat16 Bool Byte Char Double Float Half Int Long Short".split()
_STORAGES = [f"{t}Storage" for t in [*_TYPED, "ComplexDouble", "ComplexFloat"]] + [
    f"{q}Storage" for q in ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")]
_TENSORS = [f"{t}Tensor" for t in _TYPED if t != "Bool"] + ["BoolTensor"]
_SPARSE = [f"{t}Tensor" for t in _TYPED if t not in ("Bool",)]
_QSCHEMES = "per_tensor_affine per_tensor_symmetric per_channel_affine per_channel_symmetric " \
            "per_channel_affine_float_qparams".split()
_REBUILD = (
    "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter _rebuild_parameter_with_state "
    "_rebuild_qtensor _rebuild_sparse_tensor _rebuild_nested_tensor _rebuild_device_tensor_from_cpu_tensor "
    "_rebuild_device_tensor_from_numpy _rebuild_meta_tensor_no_storage _rebuild_wrapper_subclass"
).split()

ALLOWED: dict[str, frozenset[str]] = {
    "collections": frozenset({"OrderedDict", "Counter"}),
    "torch": frozenset({"Size", "Tensor", "device", *_DTYPES, *_STORAGES, *_TENSORS, *_QSCHEMES}),
    "torch._utils": frozenset(_REBUILD),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch.nn.parameter": frozenset({"Parameter"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch.storage": frozenset({"TypedStorage", "UntypedStorage"}),
    "torch.cuda": frozenset({*[s for s in _STORAGES if not s.startswith("Q")], *_TENSORS}),
    "torch.sparse": frozenset(_SPARSE),
    "torch.cuda.sparse": frozenset(_SPARSE),
    "_codecs": frozenset({"encode"}),
    "builtins": frozenset({"set", "frozenset", "bytearray", "bytes", "slice", "complex"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
}


def canonical(module: str, name: str) -> tuple[str, str]:
    """The (module, name) Python's unpickler imports for a protocol-2 name (``__builtin__.set`` -> ``builtins.set``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_allowed(module: str, name: str) -> bool:
    """Whether a pickle may name this global: an exact pair match, after the protocol-2 renames."""
    module, name = canonical(module, name)
    return name in ALLOWED.get(module, ())
