"""Screenshots of a sweep in the MLflow UI for docs/ui.md, taken with Debian's headless Chromium.

Needs Chromium on PATH (this script installs nothing): `apt-get install -y chromium` as root on Debian.
Usage, after `fmx sweep sweeps/smoke.yaml` in the same folder:

    python scripts/ui_screenshots.py [--store mlflow.db] [--sweep smoke] [--out docs/ui]

It starts the same light server as `fmx ui` on a free loopback port, (re)writes the sweep's comparison view
(orchestrator.views), and saves runs.png (the runs table on that view), charts.png (its parallel-coordinates
plot) and artifacts.png (a training run's sample plot), then stops the server.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator import ui  # noqa: E402
from orchestrator.publish import collect_runs  # noqa: E402
from orchestrator.tracking import client
from orchestrator.tags import TAG_TRIAL, search_all  # noqa: E402

WINDOW = "2200,1000"  # wide enough for method, setting and value columns side by side
RENDER_BUDGET_MS = 15000  # virtual time for the React app to fetch and draw


def shot(url: str, out: Path) -> None:
    """One PNG of `url` once its JavaScript has run, in a throw-away browser profile."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless=new", "--no-sandbox", f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--screenshot={out}", f"--window-size={WINDOW}", f"--virtual-time-budget={RENDER_BUDGET_MS}", url],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    print(f"wrote {out}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="mlflow.db", type=Path)
    parser.add_argument("--sweep", default="smoke")
    parser.add_argument("--out", default=Path("docs/ui"), type=Path)
    parser.add_argument("--trial", default="ot-fm-independent-s0", help="the training run whose plot is shown")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        sys.exit("chromium is not on PATH: apt-get install -y chromium (as root)")
    if not args.store.is_file():
        sys.exit(f"no MLflow store at {args.store}: run `fmx sweep sweeps/{args.sweep}.yaml` here first")
    uri = f"sqlite:///{args.store.resolve()}"
    exp_id = ui.experiment_id(uri, args.sweep)
    if exp_id is None:
        sys.exit(f"no sweep '{args.sweep}' in {uri}")
    collect_runs(uri, args.sweep, publish_view=True)
    trainings = search_all(client(uri), exp_id, f"tags.`{TAG_TRIAL}` = '{args.trial}'")
    parent = next((r for r in trainings if "mlflow.parentRunId" not in r.data.tags), None)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    server = ui.start_server(uri, "127.0.0.1", port, log=args.out / "server.log")
    try:
        if not ui.wait_until_served(address, server):
            sys.exit(f"the MLflow server did not answer; see {args.out / 'server.log'}")
        shot(ui.runs_page_url(address, exp_id), args.out / "runs.png")
        shot(ui.runs_page_url(address, exp_id, charts=True), args.out / "charts.png")
        if parent is not None:
            run_page = f"{address}/#/experiments/{exp_id}/runs/{parent.info.run_id}/artifacts"
            plot = _first_sample_plot(uri, parent.info.run_id)
            shot(f"{run_page}/{plot}" if plot else run_page, args.out / "artifacts.png")
    finally:
        ui.stop_server(server)
        (args.out / "server.log").unlink(missing_ok=True)


def _first_sample_plot(uri: str, run_id: str) -> str | None:
    """The run's first `plots/samples_step*.png` (the last evaluated step's is as good; the first is stable)."""
    plots = [a.path for a in client(uri).list_artifacts(run_id, "plots") if Path(a.path).name.startswith("samples_")]
    return sorted(plots)[0] if plots else None


if __name__ == "__main__":
    main()
