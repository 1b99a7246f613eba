"""The Xet representation of stored files (Xet Protocol Specification 1.1.0): hashing and formats
(hashing.py, formats.py), the store's Xet objects (store.py), the publish-time builder that runs hf_xet
against a verifying loopback CAS (builder.py, uploader.py, ingest.py), reconstruction plans
(reconstruct.py), and backfill / verify / gc (maintenance.py). Served by api/hub/xet.py."""
