"""Product catalogs: the JSONL format, its validation, and the bundled multilingual generator."""

from pipelines.catalog.schema import CatalogError, Product, read_catalog, validate_record

__all__ = ["CatalogError", "Product", "read_catalog", "validate_record"]
