"""datasets.load_dataset through hubgate (local store): a parquet dataset with a README and a
csv-only dataset (imported with the ``hubgate import`` CLI), downloaded and streamed."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from helpers.hubgate import HubgateServer
from helpers.subproc import client_env, run_script

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(df: pd.DataFrame) -> list[dict]:  # type: ignore[type-arg]
    return df.to_dict("records")


def test_load_dataset_parquet_and_csv(hubgate_local: HubgateServer, tmp_path: Path) -> None:
    hub = hubgate_local
    parquet, csv = hub.repos["parquet"], hub.repos["csv"]
    expected_parquet = {
        split: _rows(pd.read_parquet(io.BytesIO(parquet.files[f"data/{split}-00000-of-00001.parquet"])))
        for split in ("train", "test")
    }
    expected_csv = {"train": _rows(pd.read_csv(io.BytesIO(csv.files["cities.csv"])))}
    assert len(expected_parquet["train"]) == 300 and len(expected_csv["train"]) == 12

    with hub.recording() as log:
        result = run_script("datasets_client.py", {"repos": ["acme/parquet-data", "acme/csv-data"]},
                            client_env(hub.base_url, tmp_path / "hf-home"))
    for mode in ("downloaded", "streamed"):
        assert result[mode]["acme/parquet-data"] == expected_parquet, mode
        assert result[mode]["acme/csv-data"] == expected_csv, mode
    # datasets asks datasets-server.<HF_ENDPOINT host> for exported infos (best effort): nothing else
    assert set(result["refused_hosts"]) <= {"datasets-server.127.0.0.1"}, result["refused_where"]

    records = log.records
    assert all(r.status is not None and r.status < 500 for r in records)
    assert all(r.path.startswith(("/datasets/acme/", "/api/datasets/acme/")) for r in records), \
        sorted({r.path for r in records})
    train = [r for r in records if r.path.endswith("/data/train-00000-of-00001.parquet") and r.method == "GET"]
    assert any(r.status == 200 for r in train)  # downloaded
    assert any(r.status == 206 and r.request_header("range") for r in train)  # streamed: ranged reads
    csv_gets = [r for r in records if r.path.endswith("/cities.csv") and r.method == "GET"]
    assert csv_gets and all(r.status in (200, 206) for r in csv_gets)
