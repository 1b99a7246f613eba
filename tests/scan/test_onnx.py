"""ONNX: the wire walker's field numbers are onnx.proto's."""

from __future__ import annotations

import pytest

from mirror.scan import onnx as scan_onnx
from mirror.scan.protowire import LEN, MODEL_FIELDS, VARINT

onnx = pytest.importorskip("onnx")


def _number(message: type, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)


def test_model_fields_and_wire_types() -> None:
    fields = onnx.ModelProto.DESCRIPTOR.fields
    assert {f.number for f in fields} == set(MODEL_FIELDS)
    for f in fields:
        varint = f.type in (f.TYPE_INT64, f.TYPE_INT32, f.TYPE_ENUM)
        assert MODEL_FIELDS[f.number] == (VARINT if varint else LEN), f.name


@pytest.mark.parametrize("kind,message,names", [
    ("model", onnx.ModelProto, {"graph": "graph", "opset_import": "opset", "training_info": "training",
                                "functions": "function"}),
    ("training", onnx.TrainingInfoProto, {"initialization": "graph", "algorithm": "graph"}),
    ("graph", onnx.GraphProto, {"node": "node", "initializer": "tensor", "sparse_initializer": "sparse"}),
    ("function", onnx.FunctionProto, {"node": "node", "attribute_proto": "attribute", "opset_import": "opset"}),
    ("node", onnx.NodeProto, {"attribute": "attribute"}),
    ("attribute", onnx.AttributeProto, {"t": "tensor", "g": "graph", "tensors": "tensor", "graphs": "graph",
                                        "sparse_tensor": "sparse", "sparse_tensors": "sparse"}),
    ("sparse", onnx.SparseTensorProto, {"values": "tensor", "indices": "tensor"}),
])
def test_paths_to_tensors_use_onnx_field_numbers(kind: str, message: type, names: dict[str, str]) -> None:
    assert scan_onnx._PATHS[kind] == {_number(message, f): child for f, child in names.items()}


def test_tensor_external_data_fields() -> None:
    assert _number(onnx.TensorProto, "external_data") == 13
    assert _number(onnx.TensorProto, "data_location") == 14
    assert onnx.TensorProto.EXTERNAL == scan_onnx._EXTERNAL
