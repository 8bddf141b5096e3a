"""The report floor: finished runs as the report reads them, the plots, the tables and the ablation report.

Each module imports only from floors below this one (docs/architecture.md)."""
