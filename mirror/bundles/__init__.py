"""Signed, incremental air-gap bundles: ``export_bundle`` on the connected side, ``import_bundle`` on the other."""

from mirror.bundles.export import ExportResult, Watermark, export_bundle, read_watermark
from mirror.bundles.format import BundleError, load_trusted_keys
from mirror.bundles.importer import ImportResult, import_bundle

__all__ = [
    "BundleError", "ExportResult", "ImportResult", "Watermark", "export_bundle", "import_bundle",
    "load_trusted_keys", "read_watermark",
]
