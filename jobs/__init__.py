"""Scheduled and by-hand jobs: load, backfill, re-aggregate, retention."""
