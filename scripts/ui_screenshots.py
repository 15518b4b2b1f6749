"""Screenshots of a sweep in the MLflow UI for docs/ui.md, taken with Debian's headless Chromium.

Needs Chromium on PATH (this script installs nothing): `apt-get install -y chromium` as root on Debian. It
drives one headless Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`: no port, no
library) and waits real seconds for each page (Chromium's `--virtual-time-budget` is not real time: the runs
table was still loading in such shots), in a fresh profile, as a first visit sees the UI (MLflow's assistant
panel opens by itself on a first visit; it is the browser's choice, not the experiment's).
Usage, after `fmx sweep sweeps/smoke.yaml` in the same folder:

    python scripts/ui_screenshots.py [--store mlflow.db] [--sweep smoke] [--out docs/ui]

It starts the same light server as `fmx ui` on a free loopback port, (re)writes the sweep's comparison view
(orchestrator.views), and saves runs.png (the runs table on that view), charts.png (its bar charts by method x
setting), artifacts.png (a training run's sample plot), training_run.png (that run's Overview, led by its loss
curve: orchestrator.run_page), after `fmx report` report.png (the report run's report.md that the
experiment's description links to), and last training_run_wide.png (the same Overview once the assistant panel
is closed), then stops the server.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from orchestrator import ui  # noqa: E402
from orchestrator.publish import collect_runs  # noqa: E402
from orchestrator.tracking import client
from orchestrator.report_link import LINK_MARK  # noqa: E402
from orchestrator.tags import TAG_NOTE, TAG_TRIAL, search_all  # noqa: E402
from orchestrator.views import WORKFLOW_QUERY  # noqa: E402

WIDTH, HEIGHT = 1600, 1000  # a laptop's browser window: what must be readable without scrolling
RENDER_WAIT_S = 15.0  # real seconds for the React app to fetch the runs and draw them


class Browser:
    """Headless Chromium spoken to over the DevTools protocol on a pipe: commands in on fd 3, replies out on fd 4,
    each message one JSON object ended by a NUL byte."""

    def __init__(self) -> None:
        self.profile = tempfile.TemporaryDirectory()
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        args = ["chromium", "--headless=new", "--no-sandbox", "--remote-debugging-pipe", "--hide-scrollbars",
                f"--user-data-dir={self.profile.name}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"]  # fmt: skip
        self.process = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "bash", *args],
                                        pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id = b"", 0
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, self.session)  # fmt: skip

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """One command; its reply's result (events that arrive meanwhile are dropped)."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}} | ({"sessionId": session} if session else {})
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def shot(self, url: str, out: Path) -> None:
        """Open `url`, wait RENDER_WAIT_S real seconds, save the window as a PNG."""
        self.send("Page.navigate", {"url": url}, self.session)
        time.sleep(RENDER_WAIT_S)
        png = self.send("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        out.write_bytes(base64.b64decode(png))
        print(f"wrote {out}")

    def close_assistant(self) -> None:
        """Close MLflow's assistant panel (its only "Close" button) as a reader would once: the browser keeps
        that, and the next pages are as wide as the window allows."""
        click = "[...document.querySelectorAll('button[aria-label=\"Close\"]')].forEach(b => b.click())"
        self.send("Runtime.evaluate", {"expression": click}, self.session)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._out)
        os.close(self._in)
        self.profile.cleanup()


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
    browser = None
    try:
        if not ui.wait_until_served(address, server):
            sys.exit(f"the MLflow server did not answer; see {args.out / 'server.log'}")
        browser = Browser()
        browser.shot(ui.runs_page_url(address, exp_id), args.out / "runs.png")
        browser.shot(ui.runs_page_url(address, exp_id, charts=True), args.out / "charts.png")
        if parent is not None:
            run_page = f"{address}/#/experiments/{exp_id}/runs/{parent.info.run_id}"
            plot = _first_sample_plot(uri, parent.info.run_id)
            page = f"{run_page}/artifacts/{plot}" if plot else f"{run_page}/artifacts"
            browser.shot(f"{run_page}?{WORKFLOW_QUERY}", args.out / "training_run.png")
            browser.shot(f"{page}?{WORKFLOW_QUERY}", args.out / "artifacts.png")
        report = _report_link(uri, exp_id)
        if report is not None:
            browser.shot(f"{address}/{report}", args.out / "report.png")
        if parent is not None:  # last: the panel stays closed in this profile from here on
            browser.close_assistant()
            browser.shot(f"{run_page}?{WORKFLOW_QUERY}", args.out / "training_run_wide.png")
    finally:
        if browser is not None:
            browser.close()
        ui.stop_server(server)
        (args.out / "server.log").unlink(missing_ok=True)


def _report_link(uri: str, exp_id: str) -> str | None:
    """The report run's page that the sweep's description links to (orchestrator.report_link), if any."""
    note = client(uri).get_experiment(exp_id).tags.get(TAG_NOTE, "")
    return note.split("](", 1)[1].split(")", 1)[0] if LINK_MARK in note and "](" in note else None


def _first_sample_plot(uri: str, run_id: str) -> str | None:
    """The run's first `plots/samples_step*.png` (the last evaluated step's is as good; the first is stable)."""
    plots = [a.path for a in client(uri).list_artifacts(run_id, "plots") if Path(a.path).name.startswith("samples_")]
    return sorted(plots)[0] if plots else None


if __name__ == "__main__":
    main()
