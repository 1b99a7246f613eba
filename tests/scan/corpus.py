"""A corpus of hostile and benign model files, built in memory (no binaries are committed).

Reusable by any test (``from scan.corpus import CASES, write_case`` with ``tests/`` on ``sys.path``,
as pytest's rootdir conftest arranges): each ``Case`` has a stable ``name``, the repo path to store it
under, a builder returning its bytes, the verdict every scan must reach, and the rules / globals the
findings must name. ``Case.extra`` lists other files of the same snapshot (an ONNX model's external
weights, an index's shards) so a tree can be assembled.

Nothing here is ever loaded: payloads are made with ``pickle.dumps`` of objects whose ``__reduce__``
*names* a callable (dumping calls nothing) or written opcode by opcode. Every payload runs
``PAYLOAD_COMMAND``, ``touch <marker>``: the marker's absence proves no scan executed it. Benign files
are made with the real writers (torch.save, numpy.save, joblib.dump, safetensors, onnx, pyarrow).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MARKER = os.environ.get("HUBGATE_SCAN_MARKER", "/tmp/hubgate-scan-corpus-executed")
PAYLOAD_COMMAND = f"touch {MARKER}"


@dataclass(frozen=True)
class Case:
    name: str
    filename: str
    build: Callable[[], bytes]
    verdict: str  # pass | warn | block
    rules: tuple[str, ...] = ()  # each must be among the findings' rules
    names: tuple[str, ...] = ()  # each must be among FileScan.globals (and named by a pickle.global finding)
    extra: dict[str, bytes] = field(default_factory=dict)  # other files of the snapshot


# ----------------------------------------------------------------- pickle payloads


class _Reduce:
    """Pickles as ``func(*args)``: dumping records the global, nothing is called."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def reduce_pickle(protocol: int, func: Any = os.system, *args: Any) -> bytes:
    """``func(*args)`` at the given protocol (``os.system`` is recorded as ``posix.system``)."""
    return pickle.dumps(_Reduce(func, *(args or (PAYLOAD_COMMAND,))), protocol=protocol)


def _s0(text: str) -> bytes:
    return b"S" + repr(text).encode() + b"\n"


def _u4(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def global_pickle() -> bytes:
    """Protocol 0, raw ``GLOBAL os system`` + REDUCE."""
    return b"cos\nsystem\n(" + _s0(PAYLOAD_COMMAND) + b"tR."


def inst_pickle() -> bytes:
    return b"(" + _s0(PAYLOAD_COMMAND) + b"ios\nsystem\n."


def obj_pickle() -> bytes:
    return b"\x80\x01(cos\nsystem\n" + _s0(PAYLOAD_COMMAND) + b"o."


def builtin_py2_pickle() -> bytes:
    """Python 2 spelling ``__builtin__.eval`` (Python 3 maps it to builtins.eval)."""
    return b"c__builtin__\neval\n(" + _s0(f"__import__('os').system({PAYLOAD_COMMAND!r})") + b"tR."


def newobj_ex_pickle() -> bytes:
    """``subprocess.Popen.__new__`` via NEWOBJ_EX (protocol 4): a class call without REDUCE."""
    return (b"\x80\x04" + _u4("subprocess") + _u4("Popen") + b"\x93" + b"](" + _u4("touch") + _u4(MARKER) + b"e"
            + b"\x85}" + b"\x92.")


def stack_global_memo_pickle() -> bytes:
    """STACK_GLOBAL whose module and name come back from the memo after being popped (BINGET)."""
    return (b"\x80\x04" + _u4("posix") + b"\x94" + _u4("system") + b"\x940" + b"0" + b"h\x00h\x01\x93"
            + _u4(PAYLOAD_COMMAND) + b"\x85R.")


def stack_global_put_pickle() -> bytes:
    """The same through protocol-2 style BINPUT slots."""
    return (b"\x80\x04" + _u4("os") + b"q\x07" + _u4("system") + b"q\x090" + b"0" + b"h\x07h\x09\x93"
            + _u4(PAYLOAD_COMMAND) + b"\x85R.")


def getattr_import_pickle() -> bytes:
    """``getattr(__import__('os'), 'system')(cmd)``: builtins only."""
    return (b"\x80\x02c__builtin__\ngetattr\nc__builtin__\n__import__\n" + _s0("os") + b"\x85R" + _s0("system")
            + b"\x86R" + _s0(PAYLOAD_COMMAND) + b"\x85R.")


def importlib_inspect_pickle() -> bytes:
    """``inspect.getattr_static(importlib.import_module('os'), 'system')(cmd)`` (the picklescan 1.0.4 bypass)."""
    return (b"\x80\x02cinspect\ngetattr_static\ncimportlib\nimport_module\n" + _s0("os") + b"\x85R" + _s0("system")
            + b"\x86R" + _s0(PAYLOAD_COMMAND) + b"\x85R.")


def exec_pickle() -> bytes:
    return reduce_pickle(2, exec, f"import os; os.system({PAYLOAD_COMMAND!r})")


def eval_pickle() -> bytes:
    return reduce_pickle(3, eval, f"__import__('os').system({PAYLOAD_COMMAND!r})")


def popen_pickle() -> bytes:
    import subprocess

    return reduce_pickle(4, subprocess.Popen, ["touch", MARKER])


def ext_pickle() -> bytes:
    return b"\x80\x02\x82\x01" + _s0(PAYLOAD_COMMAND) + b"\x85R."


def payload_then_invalid_opcode() -> bytes:
    return reduce_pickle(2)[:-1] + b"\xff"


def payload_without_stop() -> bytes:
    return reduce_pickle(2)[:-1]


def stacked_pickles() -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0]}, protocol=2) + reduce_pickle(2)


def benign_pickle() -> bytes:
    import collections

    return pickle.dumps({"a": [1, 2.5, "x", b"y"], "s": {1}, "o": collections.OrderedDict(k=1)}, protocol=4)


def ops_heavy_pickle(n: int = 10_000_000) -> bytes:
    """A list of ``n`` small ints: ~2 bytes and one opcode each (security.md T3)."""
    return pickle.dumps([i & 0x7F for i in range(n)], protocol=2)


def memo_heavy_pickle(size: int = 20_000_000) -> bytes:
    """``size`` bytes of BINPUT/BINGET pairs: the opcodes the walker cannot batch (its slowest input per byte)."""
    return b"\x80\x02N" + b"q\x00h\x00" * ((size - 4) // 4) + b"."


# ----------------------------------------------------------------- torch files


def _torch_zip(members: dict[str, bytes], root: str = "archive", method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(f"{root}/{name}", data)
    return buf.getvalue()


def torch_state_dict(n_tensors: int = 4, legacy: bool = False) -> bytes:
    import torch

    state = {f"layer.{i}.weight": torch.full((4, 4), float(i)) for i in range(n_tensors)}
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def many_tensors(n: int = 100_000) -> bytes:
    """``torch.save`` of ``n`` tiny tensors: a large ``data.pkl`` and ``n`` storage records (T3)."""
    import torch

    buf = io.BytesIO()
    torch.save({f"t{i}": torch.zeros(1) for i in range(n)}, buf)
    return buf.getvalue()


def torch_zip_payload_in_data_pkl() -> bytes:
    return _torch_zip({"data.pkl": reduce_pickle(2), "version": b"3\n", "data/0": b"\x00" * 16})


def torch_zip_payload_in_other_member() -> bytes:
    return _torch_zip({"data.pkl": benign_pickle(), "version": b"3\n", "extra/constants.pkl": reduce_pickle(2)})


def torch_zip_protocol0_member_without_extension() -> bytes:
    return _torch_zip({"data.pkl": benign_pickle(), "version": b"3\n", "weights": global_pickle()})


def torch_zip_payload_in_storage_record() -> bytes:
    """A storage record holding a complete malicious pickle (torch never unpickles it; another loader might)."""
    return _torch_zip({"data.pkl": benign_pickle(), "data/0": reduce_pickle(2)})


def real_torch_zip_with(member: str, data: bytes) -> bytes:
    """A real ``torch.save`` zip with one member's bytes replaced (same name, rewritten archive)."""
    src = zipfile.ZipFile(io.BytesIO(torch_state_dict()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in src.infolist():
            zf.writestr(info, data if info.filename.endswith(member) else src.read(info))
    return out.getvalue()


def legacy_torch_payload() -> bytes:
    """Legacy torch.save layout (magic, protocol, sys_info, object, keys) with the payload as the object."""
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
             reduce_pickle(2), pickle.dumps([], protocol=2)]
    return b"".join(parts)


def zero_crc(data: bytes, member: str = "data.pkl") -> bytes:
    """Zero the CRC-32 of ``member`` in its local header and the central directory (torch.load still loads it)."""
    buf = bytearray(data)
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        if info.filename.endswith(member):
            struct.pack_into("<I", buf, info.header_offset + 14, 0)
            cd = buf.find(b"PK\x01\x02" + bytes(buf[info.header_offset + 4:info.header_offset + 6]))
            while cd >= 0:
                name_len = struct.unpack_from("<H", buf, cd + 28)[0]
                if bytes(buf[cd + 46:cd + 46 + name_len]) == info.filename.encode():
                    struct.pack_into("<I", buf, cd + 16, 0)
                    break
                cd = buf.find(b"PK\x01\x02", cd + 4)
    return bytes(buf)


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_of(members: dict[str, bytes]) -> bytes:
    return tar_gz_of(members, mode="w")


def tar_gz_of(members: dict[str, bytes], symlink: str | None = None, mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            link = tarfile.TarInfo("escape")
            link.type, link.linkname = tarfile.SYMTYPE, symlink
            tf.addfile(link)
    return buf.getvalue()


# ----------------------------------------------------------------- numpy and joblib


def npy(array: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npy_object_payload() -> bytes:
    """An object-dtype .npy: header, then a pickle (here the payload)."""
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (117 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + reduce_pickle(3)


def npz(members: dict[str, bytes]) -> bytes:
    return zip_of(members, zipfile.ZIP_STORED)


def joblib_dump(obj: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


# ----------------------------------------------------------------- safetensors


def safetensors(header: Any, data: bytes = b"", *, raw: bytes | None = None, length: int | None = None) -> bytes:
    """A safetensors file from a header (dict or raw bytes) and data; ``length`` overrides N."""
    head = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(head) if length is None else length) + head + data


def _t(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def real_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"a": torch.ones(3, 2), "b": torch.zeros(5, dtype=torch.bfloat16)}, metadata={"format": "pt"})


# ----------------------------------------------------------------- GGUF


def gguf(kv: list[tuple[str, int, bytes]] | None = None, tensors: list[tuple[str, list[int], int, int]] | None = None,
         *, version: int = 3, magic: bytes = b"GGUF", n_tensors: int | None = None, n_kv: int | None = None,
         data: bytes | None = None, alignment: int = 32) -> bytes:
    """A GGUF file: ``kv`` as (key, value type, encoded value), tensors as (name, dims, type, offset)."""
    kv = kv if kv is not None else [("general.architecture", 8, gstr("llama"))]
    tensors = tensors if tensors is not None else [("w", [8], 0, 0)]
    out = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                              len(kv) if n_kv is None else n_kv)
    for key, vtype, value in kv:
        out += gstr(key) + struct.pack("<I", vtype) + value
    for name, dims, ttype, offset in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, offset)
    out += b"\x00" * (-len(out) % alignment)
    return out + (data if data is not None else b"\x00" * 32)


def gstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


# ----------------------------------------------------------------- ONNX


def onnx_model(locations: list[dict[str, str]] | None = None, domain: str = "") -> bytes:
    """A one-node ONNX model whose initializers live in external files (``location``/``offset``/``length``)."""
    from onnx import TensorProto, helper

    inits = []
    for i, entries in enumerate(locations or []):
        t = helper.make_tensor(f"w{i}", TensorProto.FLOAT, [2], [0.0, 0.0])
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in entries.items():
            t.external_data.add(key=k, value=v)
        inits.append(t)
    node = helper.make_node("Identity", ["x"], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def onnx_subgraph_external(location: str) -> bytes:
    """External data hidden in an ``If`` node's then-branch subgraph."""
    from onnx import TensorProto, helper

    t = helper.make_tensor("w", TensorProto.FLOAT, [2], [0.0, 0.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=t)], "b", [],
                               [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# ----------------------------------------------------------------- templates and configs

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
TOOLS_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if message.role == 'system' %}{%- set ns.system = message.content %}"
    "{%- endif %}{{- '<|im_start|>' + message.role + '\\n' + message.content | default('', true) + '<|im_end|>\\n' }}"
    "{%- endfor %}Data outside tags, like __init__ or import os, is printed, never run."
)
SSTI_TEMPLATES = {
    "class-mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "attr-filter": "{{ messages|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "concat": "{{ messages['_' ~ '_cla' ~ 'ss__'] }}",
    "template-reference": "{{ self._TemplateReference__context.joiner }}",
    "import": "{% import 'os' as os %}{{ os }}",
}


def tokenizer_config(template: Any) -> bytes:
    return json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template}).encode()


# ----------------------------------------------------------------- the table

_W = ("w", [2], 0, 0)


def _cases() -> list[Case]:  # noqa: PLR0915 - one table
    m = "pickle.global"
    c: list[Case] = []
    for proto in range(6):
        c.append(Case(f"os-system-p{proto}", f"p{proto}.pkl", lambda p=proto: reduce_pickle(p), "block", (m,),
                      ("posix.system",)))
    c += [
        Case("global-opcode", "global.bin", global_pickle, "block", (m,), ("os.system",)),
        Case("inst-opcode", "inst.pkl", inst_pickle, "block", (m,), ("os.system",)),
        Case("obj-opcode", "obj.pkl", obj_pickle, "block", (m,), ("os.system",)),
        Case("py2-builtin-eval", "py2.pkl", builtin_py2_pickle, "block", (m,), ("__builtin__.eval",)),
        Case("newobj-ex-popen", "newobj_ex.pkl", newobj_ex_pickle, "block", (m,), ("subprocess.Popen",)),
        Case("stack-global-memoize", "memo.pkl", stack_global_memo_pickle, "block", (m,), ("posix.system",)),
        Case("stack-global-binput", "memo_put.pkl", stack_global_put_pickle, "block", (m,), ("os.system",)),
        Case("getattr-import", "gadget.pkl", getattr_import_pickle, "block", (m,),
             ("__builtin__.getattr", "__builtin__.__import__")),
        Case("importlib-inspect", "chain.pkl", importlib_inspect_pickle, "block", (m,),
             ("importlib.import_module", "inspect.getattr_static")),
        Case("builtins-exec", "exec.pt", exec_pickle, "block", (m,), ("__builtin__.exec",)),
        Case("builtins-eval", "eval.pth", eval_pickle, "block", (m,), ("builtins.eval",)),
        Case("subprocess-popen", "popen.ckpt", popen_pickle, "block", (m,), ("subprocess.Popen",)),
        Case("ext-opcode", "ext.pkl", ext_pickle, "block", ("pickle.ext",)),
        Case("payload-then-invalid-opcode", "broken.bin", payload_then_invalid_opcode, "block", ("pickle.parse",),
             ("posix.system",)),
        Case("payload-without-stop", "nostop.bin", payload_without_stop, "block", ("pickle.parse",)),
        Case("stacked-pickles", "stacked.pkl", stacked_pickles, "block", ("pickle.stacked", m), ("posix.system",)),
        Case("torch-zip-data-pkl", "pytorch_model.bin", torch_zip_payload_in_data_pkl, "block", (m,),
             ("posix.system",)),
        Case("torch-zip-other-member", "model.pt", torch_zip_payload_in_other_member, "block", (m,), ("posix.system",)),
        Case("torch-zip-member-no-ext-p0", "model.pth", torch_zip_protocol0_member_without_extension, "block", (m,),
             ("os.system",)),
        Case("torch-zip-storage-record", "model.ckpt", torch_zip_payload_in_storage_record, "block", (m,),
             ("posix.system",)),
        Case("torch-zip-deflated-payload", "deflated.pt", lambda: real_torch_zip_with("data.pkl", reduce_pickle(2)),
             "block", (m,), ("posix.system",)),
        Case("legacy-torch-payload", "legacy.bin", legacy_torch_payload, "block", (m,), ("posix.system",)),
        Case("npy-object-payload", "arr.npy", npy_object_payload, "block", (m,), ("posix.system",)),
        Case("npz-object-payload", "arrs.npz", lambda: npz({"a.npy": npy_object_payload()}), "block", (m,),
             ("posix.system",)),
        Case("joblib-payload", "model.joblib", lambda: joblib_dump(_Reduce(os.system, PAYLOAD_COMMAND)), "block",
             (m,), ("posix.system",)),
        Case("joblib-numpy", "est.joblib", lambda: joblib_dump({"coef": __import__("numpy").arange(4.0)}), "block",
             (m,), ("joblib.numpy_pickle.NumpyArrayWrapper",)),
        Case("zip-zeroed-crc", "crc.pt", lambda: zero_crc(real_torch_zip_with("data.pkl", reduce_pickle(2))), "block",
             ("archive.crc", m)),
        Case("zip-zeroed-crc-benign", "crc_benign.pt", lambda: zero_crc(torch_state_dict()), "block", ("archive.crc",)),
        Case("zip-junk-prefix", "prefix.pt", lambda: b"\x00" * 64 + torch_state_dict(), "block", ("archive.prefix",)),
        Case("zip-raw-pickle", "bundle.zip", lambda: zip_of({"model.bin": reduce_pickle(2)}), "block", (m,)),
        Case("nested-zip", "nested.zip", lambda: zip_of({"inner/model.pt": torch_zip_payload_in_data_pkl()}), "block",
             ("archive.nested",)),
        Case("nested-zip-twice", "nested2.zip", lambda: zip_of({"x.zip": zip_of({"m.pt": reduce_pickle(2)})}), "block",
             ("archive.nested",)),
        Case("7z", "model.7z", lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 64, "block", ("archive.unsupported",)),
        Case("7z-named-bin", "wrapped.bin", lambda: b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 64, "block",
             ("archive.unsupported", "format.mismatch")),
        Case("tar-gz-symlink", "data.tar.gz", lambda: tar_gz_of({"a.csv": b"x,y\n1,2\n"}, symlink="/etc/passwd"),
             "block", ("archive.member-type",)),
        Case("zip-slip", "slip.zip", lambda: zip_of({"../../evil.csv": b"a\n"}), "block", ("archive.member-path",)),
        Case("pickle-named-safetensors", "model.safetensors", lambda: reduce_pickle(2), "block",
             ("format.mismatch", m)),
        Case("torch-zip-named-safetensors", "model2.safetensors", torch_zip_payload_in_data_pkl, "block",
             ("format.mismatch",)),
        Case("pickle-named-json", "config.json", lambda: reduce_pickle(4), "block", ("format.mismatch", m)),
        Case("pickle-named-txt", "notes.txt", global_pickle, "block", ("format.mismatch", m)),
        Case("pickle-named-msgpack", "flax_model.msgpack", lambda: reduce_pickle(2), "block", ("format.mismatch",)),
        Case("pickle-named-h5", "tf_model.h5", lambda: reduce_pickle(2), "block", ("format.mismatch",)),
        Case("pickle-named-gguf", "model.gguf", lambda: reduce_pickle(2), "block", ("format.mismatch",)),
        Case("pickle-named-onnx", "model.onnx", lambda: reduce_pickle(2), "block", ("format.mismatch",)),
        Case("pickle-no-extension", "weights", lambda: reduce_pickle(2), "block", (m,), ("posix.system",)),
        Case("protocol0-no-extension", "weights0", global_pickle, "block", (m,), ("os.system",)),
        Case("protocol0-padded-past-the-sniff", "weights_padded", lambda: _s0("a" * (2 << 20)) + b"0" + global_pickle(),
             "block", (m,), ("os.system",)),
        Case("training-args", "training_args.bin", training_args_pickle, "block", (m,),
             ("transformers.training_args.TrainingArguments",)),
    ]
    # safetensors (security.md §4): rejects
    f32 = _t("F32", [2], 0, 8)
    st_rejects: list[tuple[str, Callable[[], bytes], str]] = [
        ("S01-length-past-eof", lambda: safetensors({"a": f32}, b"\0" * 8, length=10_000), "header-length"),
        ("S02-length-2-63", lambda: safetensors({"a": f32}, b"\0" * 8, length=2**63), "header-length"),
        ("S03-length-0", lambda: safetensors({}, length=0), "header-length"),
        ("S04-not-json", lambda: safetensors(None, raw=b"{not json}"), "json"),
        ("S05-json-array", lambda: safetensors([1, 2]), "header-start"),
        ("S06-invalid-utf8", lambda: safetensors(None, raw=b'{"\xff": 1}'), "utf8"),
        ("S07-dtype-f128", lambda: safetensors({"a": _t("F128", [2], 0, 32)}, b"\0" * 32), "dtype"),
        ("S08-size-mismatch", lambda: safetensors({"a": _t("F32", [3, 3], 0, 16)}, b"\0" * 16), "size"),
        ("S09-offsets-past-eof", lambda: safetensors({"a": f32}, b"\0" * 4), "coverage"),
        ("S10-overlap", lambda: safetensors({"a": f32, "b": _t("F32", [2], 4, 12)}, b"\0" * 12), "layout"),
        ("S11-gap", lambda: safetensors({"a": f32, "b": _t("F32", [2], 12, 20)}, b"\0" * 20), "layout"),
        ("S12-begin-after-end", lambda: safetensors({"a": _t("F32", [0], 8, 0)}, b"\0" * 8), "offsets"),
        ("S13-negative-offset", lambda: safetensors({"a": _t("F32", [2], -8, 0)}, b""), "offsets"),
        ("S14-not-from-zero", lambda: safetensors({"a": _t("F32", [2], 8, 16)}, b"\0" * 16), "layout"),
        ("S15-trailing-bytes", lambda: safetensors({"a": f32}, b"\0" * 12), "coverage"),
        ("S16-metadata-int", lambda: safetensors({"__metadata__": {"k": 1}, "a": f32}, b"\0" * 8), "metadata"),
        ("S17-metadata-nested", lambda: safetensors({"__metadata__": {"k": {"x": "y"}}, "a": f32}, b"\0" * 8),
         "metadata"),
        ("S18-duplicate-first-valid", lambda: safetensors(None, b"\0" * 8, raw=b'{"a":' + json.dumps(f32).encode()
                                                          + b',"a":' + json.dumps(_t("F32", [4], 0, 16)).encode()
                                                          + b"}"), "duplicate-key"),
        ("S18b-duplicate-last-valid", lambda: safetensors(None, b"\0" * 8, raw=b'{"a":' + json.dumps(
            _t("F32", [4], 0, 16)).encode() + b',"a":' + json.dumps(f32).encode() + b"}"), "duplicate-key"),
        ("S18c-duplicate-metadata", lambda: safetensors(None, b"\0" * 8, raw=b'{"__metadata__":{},"__metadata__":{},'
                                                        b'"a":' + json.dumps(f32).encode() + b"}"), "duplicate-key"),
        ("S19-nul-padding", lambda: safetensors(None, b"\0" * 8, raw=json.dumps({"a": f32}).encode() + b"\0\0"),
         "padding"),
        ("S20-negative-dim", lambda: safetensors({"a": _t("F32", [-2], 0, 8)}, b"\0" * 8), "shape"),
        ("S21-shape-overflow", lambda: safetensors({"a": _t("F32", [2**62, 2**62], 0, 8)}, b"\0" * 8), "size"),
        ("S25-missing-dtype", lambda: safetensors({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "entry"),
        ("S26-extra-field", lambda: safetensors({"a": {**f32, "extra": 1}}, b"\0" * 8), "entry"),
        ("S27-short-file", lambda: b"\x02\x00\x00", "header-length"),
        ("S28-metadata-list", lambda: safetensors({"__metadata__": ["x"], "a": f32}, b"\0" * 8), "metadata"),
        ("S29-float-offsets", lambda: safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8.0]}},
                                                  b"\0" * 8), "offsets"),
        ("S32-leading-space", lambda: safetensors(None, b"\0" * 8, raw=b" " + json.dumps({"a": f32}).encode()),
         "header-start"),
        ("S34-offset-2-70", lambda: safetensors({"a": _t("U8", [2**70], 0, 2**70)}, b"\0" * 8), "coverage"),
        ("S35-shape-not-list", lambda: safetensors({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}},
                                                   b"\0" * 8), "shape"),
        ("Z-F4-odd", lambda: safetensors({"a": _t("F4", [3], 0, 2)}, b"\0" * 2), "size"),
        ("nan-in-header", lambda: safetensors(None, b"\0" * 8, raw=b'{"__metadata__":{"k":NaN},"a":'
                                              + json.dumps(f32).encode() + b"}"), "json"),
    ]
    c += [Case(f"st-{name}", f"{name}.safetensors", build, "block", (f"safetensors.{rule}",))
          for name, build, rule in st_rejects]
    st_accepts: list[tuple[str, Callable[[], bytes]]] = [
        ("S00-one", lambda: safetensors({"a": f32}, b"\0" * 8)),
        ("S00b-two", lambda: safetensors({"__metadata__": {"format": "pt"}, "a": f32, "b": _t("I64", [1], 8, 16)},
                                         b"\0" * 16)),
        ("S22-empty-tensor", lambda: safetensors({"e": _t("F32", [0], 0, 0), "a": f32}, b"\0" * 8)),
        ("S23-scalar", lambda: safetensors({"s": _t("F64", [], 0, 8)}, b"\0" * 8)),
        ("S24-path-like-name", lambda: safetensors({"../../etc/passwd": f32}, b"\0" * 8)),
        ("S30-no-tensors", lambda: safetensors({})),
        ("S31-out-of-order", lambda: safetensors({"b": _t("F32", [2], 8, 16), "a": f32}, b"\0" * 16)),
        ("S33-f8-bool", lambda: safetensors({"a": _t("F8_E4M3", [4], 0, 4), "b": _t("BOOL", [4], 4, 8)}, b"\0" * 8)),
        ("S36-bf16", lambda: safetensors({"a": _t("BF16", [4], 0, 8)}, b"\0" * 8)),
        ("Z-sub-byte", lambda: safetensors({"a": _t("F8_E8M0", [4], 0, 4), "b": _t("F4", [8], 4, 8),
                                            "c": _t("F6_E2M3", [4], 8, 11), "d": _t("F6_E3M2", [4], 11, 14)},
                                           b"\0" * 14)),
        ("padded-with-spaces", lambda: safetensors(None, b"\0" * 8, raw=json.dumps({"a": f32}).encode() + b"    ")),
        ("library-written", real_safetensors),
    ]
    c += [Case(f"st-{name}", f"{name}.safetensors", build, "pass") for name, build in st_accepts]
    # GGUF
    tmpl = ("tokenizer.chat_template", 8, gstr(SSTI_TEMPLATES["globals"]))
    c += [
        Case("gguf-valid", "model.gguf", lambda: gguf(kv=[("general.architecture", 8, gstr("llama")),
                                                          ("tokenizer.chat_template", 8, gstr(CHATML_TEMPLATE)),
                                                          ("general.alignment", 4, struct.pack("<I", 32))]), "pass"),
        Case("gguf-ssti-template", "ssti.gguf", lambda: gguf(kv=[tmpl]), "block", ("template.dunder",)),
        Case("gguf-huge-tensor-count", "count.gguf", lambda: gguf(n_tensors=2**62), "block", ("gguf.count",)),
        Case("gguf-huge-kv-count", "kv.gguf", lambda: gguf(n_kv=2**62), "block", ("gguf.count",)),
        Case("gguf-huge-string", "str.gguf", lambda: gguf(kv=[("k", 8, struct.pack("<Q", 2**63))]), "block",
             ("gguf.truncated",)),
        Case("gguf-bad-magic", "magic.gguf", lambda: gguf(magic=b"GGUX"), "block", ("format.mismatch",)),
        Case("gguf-bad-version", "version.gguf", lambda: gguf(version=7), "block", ("gguf.version",)),
        Case("gguf-truncated", "trunc.gguf", lambda: gguf()[:40], "block", ("gguf.truncated",)),
        Case("gguf-tensor-outside", "outside.gguf", lambda: gguf(tensors=[("w", [8], 0, 4096)]), "block",
             ("gguf.tensor",)),
        Case("gguf-tensor-overlap", "overlap.gguf", lambda: gguf(tensors=[("a", [8], 0, 0), ("b", [8], 0, 0)],
                                                               data=b"\0" * 64), "block", ("gguf.tensor",)),
        Case("gguf-duplicate-key", "dup.gguf", lambda: gguf(kv=[("k", 4, b"\0" * 4), ("k", 4, b"\0" * 4)]), "block",
             ("gguf.duplicate-key",)),
        Case("gguf-bad-alignment", "align.gguf", lambda: gguf(kv=[("general.alignment", 4, struct.pack("<I", 48))]),
             "block", ("gguf.alignment",)),
        Case("gguf-unknown-type", "type.gguf", lambda: gguf(kv=[("k", 99, b"")]), "block", ("gguf.type",)),
    ]
    # ONNX external data (the extra file is part of the snapshot tree)
    wb = {"weights.bin": b"\0" * 64}
    c += [
        Case("onnx-external-ok", "model.onnx", lambda: onnx_model([{"location": "weights.bin", "offset": "0",
                                                                    "length": "8"}]), "pass", extra=wb),
        Case("onnx-external-missing", "missing.onnx", lambda: onnx_model([{"location": "nothere.bin"}]), "block",
             ("onnx.external-missing",)),
        Case("onnx-external-dotdot", "dotdot.onnx", lambda: onnx_model([{"location": "../outside"}]), "block",
             ("onnx.external-path",)),
        Case("onnx-external-absolute", "abs.onnx", lambda: onnx_model([{"location": "/etc/passwd"}]), "block",
             ("onnx.external-path",)),
        Case("onnx-external-sub-dotdot", "sub.onnx", lambda: onnx_model([{"location": "sub/../../x"}]), "block",
             ("onnx.external-path",)),
        Case("onnx-external-backslash", "bs.onnx", lambda: onnx_model([{"location": "..\\x.bin"}]), "block",
             ("onnx.external-path",)),
        Case("onnx-external-bounds", "bounds.onnx", lambda: onnx_model([{"location": "weights.bin", "offset": "60",
                                                                         "length": "8"}]), "block",
             ("onnx.external-bounds",), extra=wb),
        Case("onnx-subgraph-escape", "subgraph.onnx", lambda: onnx_subgraph_external("../../secret"), "block",
             ("onnx.external-path",)),
        Case("onnx-custom-domain", "custom.onnx", lambda: onnx_model(domain="com.attacker"), "warn",
             ("onnx.custom-domain",)),
    ]
    # chat templates and configs
    for key, t in SSTI_TEMPLATES.items():
        rule = "template.name" if key in ("import",) else "template.dunder"
        c.append(Case(f"template-{key}", f"t-{key}/tokenizer_config.json", lambda t=t: tokenizer_config(t), "block",
                      (rule,)))
    for key, t in {"llama3": LLAMA3_TEMPLATE, "chatml": CHATML_TEMPLATE, "mistral": MISTRAL_TEMPLATE,
                   "tools": TOOLS_TEMPLATE}.items():
        c.append(Case(f"template-benign-{key}", f"b-{key}/tokenizer_config.json", lambda t=t: tokenizer_config(t),
                      "pass"))
    c += [
        Case("template-list-one-hostile", "list/tokenizer_config.json",
             lambda: tokenizer_config([{"name": "default", "template": CHATML_TEMPLATE},
                                       {"name": "tool_use", "template": SSTI_TEMPLATES["class-mro"]}]), "block",
             ("template.dunder",)),
        Case("template-jinja-file", "chat_template.jinja", lambda: SSTI_TEMPLATES["globals"].encode(), "block",
             ("template.dunder",)),
        Case("template-jinja-benign", "ok/chat_template.jinja", lambda: LLAMA3_TEMPLATE.encode(), "pass"),
        Case("template-chat-template-json", "chat_template.json",
             lambda: json.dumps({"chat_template": SSTI_TEMPLATES["attr-filter"]}).encode(), "block",
             ("template.dunder",)),
        Case("config-cross-repo-auto-map", "x/config.json",
             lambda: json.dumps({"auto_map": {"AutoModel": "other-org/code--modeling_x.XModel"}}).encode(), "pass"),
        Case("broken-json", "broken/config.json", lambda: b'{"model_type": ', "warn", ("format.mismatch",)),
        Case("index-missing-shard", "model.safetensors.index.json",
             lambda: json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                "b": "model-00002-of-00002.safetensors"}}).encode(), "block",
             ("index.missing-shard",), extra={"model-00001-of-00002.safetensors": safetensors({})}),
        Case("index-escaping-shard", "esc/pytorch_model.bin.index.json",
             lambda: json.dumps({"weight_map": {"a": "../../outside.bin"}}).encode(), "block", ("index.path",)),
    ]
    # benign
    c += [
        Case("benign-state-dict", "state.pt", torch_state_dict, "pass"),
        Case("benign-legacy-state-dict", "legacy_state.bin", lambda: torch_state_dict(legacy=True), "pass"),
        Case("benign-transformers-pytorch-model", "tiny/pytorch_model.bin", transformers_pytorch_model, "pass"),
        Case("benign-optimizer-state", "optimizer.pt", optimizer_state, "pass"),
        Case("benign-rng-state", "rng_state.pth", rng_state, "pass"),
        Case("benign-mixed-checkpoint", "mixed.ckpt", mixed_checkpoint, "pass"),
        Case("benign-deflated-torch-zip", "deflated_ok.pt", lambda: real_torch_zip_with("version", b"3\n"), "pass"),
        Case("benign-raw-pickle", "plain.pkl", benign_pickle, "pass"),
        Case("benign-npy", "numbers.npy", lambda: npy(__import__("numpy").arange(12.0).reshape(3, 4)), "pass"),
        Case("benign-npz", "numbers.npz", lambda: npz({"a.npy": npy(__import__("numpy").arange(3)),
                                                       "b.npy": npy(__import__("numpy").ones((2, 2)))}), "pass"),
        Case("benign-npy-object", "strings.npy", lambda: npy(__import__("numpy").array(["a", 1], dtype=object)),
             "pass"),
        Case("benign-text", "README.md", lambda: "# Model card\n\nUnicode: é ✓\n".encode(), "pass"),
        Case("benign-json", "tiny/config.json", lambda: json.dumps({"model_type": "gpt2", "n_layer": 1}).encode(),
             "pass"),
        Case("benign-random-bin", "raw.bin", lambda: bytes(range(256)) * 64, "pass"),
        Case("benign-parquet", "data/train.parquet", parquet_file, "pass"),
        Case("benign-dataset-zip", "data/csvs.zip", lambda: zip_of({"train.csv": b"a,b\n1,2\n" * 100,
                                                                    "sub/test.csv": b"a,b\n3,4\n"}), "pass"),
        Case("benign-dataset-tar-gz", "data/csvs.tar.gz", lambda: tar_gz_of({"train.csv": b"a,b\n1,2\n" * 100,
                                                                             "meta.json": b"{}"}), "pass"),
        Case("benign-gzip-jsonl", "data/train.jsonl.gz", lambda: __import__("gzip").compress(b'{"a": 1}\n' * 50),
             "pass"),
        Case("benign-remote-code-file", "modeling_x.py", lambda: b"class X:\n    pass\n", "pass"),
        Case("benign-empty", "empty.txt", lambda: b"", "pass"),
    ]
    return c


def training_args_pickle() -> bytes:
    """What ``Trainer`` saves as ``training_args.bin``: a TrainingArguments object (NEWOBJ + BUILD)."""
    return b"\x80\x02ctransformers.training_args\nTrainingArguments\n)\x81}" + _s0("output_dir") + _s0("out") + b"sb."


def transformers_pytorch_model() -> bytes:
    """What transformers 4.x ``save_pretrained(safe_serialization=False)`` wrote: ``torch.save(state_dict)``
    of a real model (transformers 5 no longer writes pickles)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=64, n_positions=16))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def optimizer_state() -> bytes:
    import torch

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p])
    p.sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    return buf.getvalue()


def rng_state() -> bytes:
    import random

    import numpy as np
    import torch

    buf = io.BytesIO()
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}, buf)
    return buf.getvalue()


def mixed_checkpoint() -> bytes:
    import torch

    state = {"bf16": torch.ones(2, dtype=torch.bfloat16), "i8": torch.zeros(3, dtype=torch.int8),
             "b": torch.ones(1, dtype=torch.bool), "size": torch.Size([1, 2]), "p": torch.nn.Parameter(torch.ones(2)),
             "nested": {"set": {1, 2}, "fs": frozenset([1]), "bytes": b"", "ba": bytearray(b"x"), "cx": 1j,
                        "dev": torch.device("cpu"), "dt": torch.float16}}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def parquet_file() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), buf)
    return buf.getvalue()


CASES: list[Case] = _cases()
BY_NAME: dict[str, Case] = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


def write_case(case: Case, folder: Path) -> dict[str, int]:
    """Write the case (and its extra files) under ``folder``; the snapshot tree (path -> size)."""
    tree = {}
    for path, data in {case.filename: case.build(), **case.extra}.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        tree[path] = len(data)
    return tree
