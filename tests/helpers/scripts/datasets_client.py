"""load_dataset from HF_ENDPOINT (hubgate), downloaded and streamed.

Usage: datasets_client.py '{"repos": ["acme/parquet-data", "acme/csv-data"]}'
Prints one line ``RESULT {json}``: per repo, per split, the rows.
"""

import netguard  # noqa: F401  (first: loopback only)

import json
import sys

from datasets import load_dataset

args = json.loads(sys.argv[1])
result: dict = {"downloaded": {}, "streamed": {}}  # type: ignore[type-arg]
for repo in args["repos"]:
    ds = load_dataset(repo)
    result["downloaded"][repo] = {split: ds[split].to_list() for split in ds}
    streamed = load_dataset(repo, streaming=True)
    result["streamed"][repo] = {split: list(streamed[split]) for split in streamed}
result["refused_hosts"] = sorted(set(netguard.refused))
result["refused_where"] = netguard.where
print("RESULT " + json.dumps(result))
