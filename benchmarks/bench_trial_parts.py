"""Where does a training trial's time go besides its own compute? The in-trial parts, timed one by one.

bench_sweep_overhead.py measures the whole orchestration cost of a sweep; this script splits the part spent
inside a trial (MLflow logging, model and optimizer set-up, checkpoints, plots) by running the trial's steps
in this one process, without Ray, on the same sweep file, against a fresh sqlite MLflow store. The first
trial of a process pays the once-per-process costs (imports; torch's optimizer imports torch._dynamo on first
use), which a Tune actor pays once and later trials on the same actor (reuse_actors) do not.

    python benchmarks/bench_trial_parts.py [--trials 3] [--steps 1500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sweep_overhead import SWEEP  # noqa: E402  (the sweep file both benchmarks time)


class Stopwatch:
    """Seconds per named part, per trial."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = defaultdict(list)

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name].append(time.perf_counter() - start)


def timed_import(watch: Stopwatch, name: str, do_import: Callable[[], object]) -> None:
    with watch.part(name):
        do_import()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3, help="trials run one after another in this process")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per trial")
    args = parser.parse_args()

    once = Stopwatch()
    timed_import(once, "import torch", lambda: __import__("torch"))
    timed_import(once, "import mlflow", lambda: __import__("mlflow"))
    # torch.optim wraps each optimizer's constructor in a lazily imported dynamo guard: the first optimizer
    # a process builds imports torch._dynamo. Done here, it shows on its own line, not inside the set-up.
    timed_import(once, "import torch._dynamo (first torch.optim optimizer)", lambda: __import__("torch._dynamo"))
    import numpy as np
    import torch

    from orchestrator.validation import parse_sweep
    from orchestrator.plan import plan_sweep
    from orchestrator.plots import save_loss_curve, save_samples
    from orchestrator.tracking import TrialRun, ensure_experiment
    from orchestrator.evaluation_runs import log_evaluation_runs
    from orchestrator.records import trial_params
    from orchestrator.training_loop import TrialParts

    torch.set_num_threads(1)  # as in a 1-CPU trial
    every = max(1, args.steps // 3)
    config = parse_sweep(
        yaml.safe_load(SWEEP.format(steps=args.steps, ckpt=every, seeds=list(range(args.trials)), torch_trainer="false"))
    )
    plan = plan_sweep(config)
    work = Path(tempfile.mkdtemp(prefix="fmxparts"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    with once.part("MLflow store creation (once per sweep, in the driver)"):
        experiment = ensure_experiment(uri, config.name)

    watch = Stopwatch()
    for key in plan.trainings:
        with watch.part("MLflow run + params"):
            run = TrialRun(uri, experiment, config.name, key, trial_params(config, key))
        with watch.part("model, optimizer, data set-up"):
            runner = TrialParts.build(config.for_training(key), key)
        for boundary in range(every, args.steps + 1, every):
            with watch.part("training (compute)"):
                runner.trainer.train_until(boundary)
            with watch.part("checkpoint save"):
                runner.state.save(work / key.trial_id)
        with watch.part("evaluations (compute)"):
            rows, samples = runner.evaluator.evaluate(plan.settings)
        with watch.part("sample + loss plots"):
            save_samples(samples, work / "samples.png")
            save_loss_curve(runner.state.losses, work / "loss.png")
            np.savez_compressed(work / "samples.npz", **{k: v.numpy() for k, v in samples.items()})
        with watch.part("MLflow metrics, artifacts, evaluations"):
            run.log_history("train_loss", runner.state.losses)
            log_evaluation_runs(run, rows)
            for file in ("samples.png", "loss.png", "samples.npz"):
                run.log_artifact(work / file, "plots")
            run.log_evaluations(rows, {"trial_id": key.trial_id})
            run.finish("FINISHED")

    print(f"{args.trials} trials of {args.steps} steps x {len(plan.settings)} solver settings, one process, 1 thread\n")
    print(f"{'once per process / sweep':58s} {'seconds':>8s}")
    for name, values in once.parts.items():
        print(f"  {name:56s} {values[0]:8.3f}")
    print(f"\n{'per trial':58s} {'first':>8s} {'later':>8s}")
    overhead_first = overhead_later = 0.0
    for name, values in watch.parts.items():
        first = sum(values[: len(values) // args.trials])
        later = sum(values[len(values) // args.trials :]) / max(1, args.trials - 1)
        print(f"  {name:56s} {first:8.3f} {later:8.3f}")
        if "compute" not in name:
            overhead_first, overhead_later = overhead_first + first, overhead_later + later
    print(f"  {'all but compute':56s} {overhead_first:8.3f} {overhead_later:8.3f}")


if __name__ == "__main__":
    main()
