"""Ingest: beacons in, validated and enriched events durably out to hourly Parquet."""
