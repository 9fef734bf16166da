"""LittleStats: self-hosted, privacy-friendly web analytics on Parquet and DuckDB."""

__version__ = "0.1.0"
