"""Moving data in and out of LittleStats: importers and exporters."""
