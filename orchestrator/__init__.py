"""fmx's orchestration: sweeps on Ray Tune, records in MLflow, tables in Parquet. See `orchestrator.api`."""

from orchestrator.api import load_results, run_sweep

__all__ = ["load_results", "run_sweep"]
