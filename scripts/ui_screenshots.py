"""Screenshots of a sweep in the MLflow UI, for docs/ui.md, taken with Debian's headless Chromium.

Needs: `apt-get install -y chromium` (as root; this script installs nothing).
Usage: python scripts/ui_screenshots.py STORE.db SWEEP OUT_DIR
DRAFT: columns and the parallel-coordinates axes are not preselected yet (MLflow keeps them in the browser's
local storage, or in an experiment tag `mlflow.sharedViewState.<key>` opened by `?viewStateShareKey=<key>`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator import ui  # noqa: E402


def shot(url: str, out: Path) -> None:
    """One PNG of `url` after its JavaScript has run (virtual time lets the React app fetch and render)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless=new", "--no-sandbox", f"--user-data-dir={profile}",
                        f"--screenshot={out}", "--window-size=1600,1000", "--virtual-time-budget=15000", url],
                       check=True, capture_output=True, timeout=120)  # fmt: skip


def main(db: str, sweep: str, out_dir: str) -> None:
    from mlflow.tracking import MlflowClient

    uri, out = f"sqlite:///{Path(db).resolve()}", Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exp_id = ui.experiment_id(uri, sweep)
    if exp_id is None:
        sys.exit(f"no sweep '{sweep}' in {uri}")
    runs = MlflowClient(tracking_uri=uri).search_runs([exp_id], max_results=50)
    port = __import__("tests.mlflow_server", fromlist=["free_port"]).free_port()
    address = f"http://127.0.0.1:{port}"
    server = ui.start_server(uri, "127.0.0.1", port, log=out / "server.log", own_session=True)
    try:
        if not ui.wait_until_served(address, server):
            sys.exit("the MLflow server did not answer; see server.log")
        shot(ui.runs_page_url(address, exp_id), out / "runs.png")
        ids = json.dumps([r.info.run_id for r in runs])
        shot(f"{address}/#/compare-runs?runs={ids}&experiments={json.dumps([exp_id])}", out / "compare.png")
        if runs:
            shot(f"{address}/#/experiments/{exp_id}/runs/{runs[0].info.run_id}/artifacts", out / "artifacts.png")
    finally:
        ui.stop_server(server)


if __name__ == "__main__":
    main(*sys.argv[1:4])
