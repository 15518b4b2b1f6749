"""Bad input through the real CLI: exit code 2, one message naming file/key/value, nothing written.

Most commands here end before Ray starts and run in the test's own process (`fmx_here`: typer's CliRunner
with the console script's environment); `test_the_console_script_ends_bad_input_as_the_cli_does` shows a
process ends the same way, and the commands that start Ray or a sweep run as processes (`run_fmx`)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests.bad_inputs import BILLION_LAUGHS, make_store
from tests.cli_helpers import REPO, fmx_env, run_fmx
from tests.cli_helpers import fmx_in_this_process as fmx_here
from tests.shipped_sweeps_env import shipped_sweeps_env, stand_in_detector

GOOD = textwrap.dedent(
    """\
    name: bad-input
    dataset: {name: checkerboard}
    model: {kind: mlp, hidden: 16, depth: 2}
    train: {steps: 10, batch_size: 32}
    eval: {samples: 50, likelihood_points: 10}
    grid: {path: [ot], objective: [fm], solver: [euler], nfe: [4]}
    """
)


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    """Answers as an HTTP server does, without logging each request to stderr (the test's own process runs
    the command and reads that stderr)."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def _ports() -> Iterator[dict[str, int]]:
    """Ports held for one test (a port picked at collection time may be taken by then, by another worker's
    Ray say): one bound that refuses connections, one where an HTTP server answers, one that accepts and
    never answers."""
    with contextlib.ExitStack() as stack:
        closed = stack.enter_context(socket.socket())
        closed.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
        silent = stack.enter_context(socket.socket())
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody reads or answers
        server = stack.enter_context(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stack.callback(server.shutdown)
        yield {"closed_port": closed.getsockname()[1], "silent_port": silent.getsockname()[1], "http_port": server.server_address[1]}


CASES = {
    "malformed_yaml": (GOOD.replace("grid: {", "grid: {{"), [], ["malformed YAML", "line"]),
    "unknown_key": (GOOD + "extra_key: 1\n", [], ["extra_key", "unknown key"]),
    "unknown_nested_key": (GOOD.replace("steps: 10", "stepz: 10"), [], ["train.stepz", "unknown key"]),
    # Square brackets are rich's markup: an error quoting them must print them, not swallow them as a style.
    "markup_in_a_key": (GOOD.replace("steps: 10", "steps: 10, '[bold]lr[/bold]': 1"), [], ["train.[bold]lr[/bold]", "unknown key"]),
    "unknown_path": (GOOD.replace("path: [ot]", "path: [sigmoid]"), [], ["grid.path", "sigmoid"]),
    "unknown_solver": (GOOD.replace("solver: [euler]", "solver: [rk45]"), [], ["grid.solver", "rk45"]),
    "impossible_combination": (GOOD.replace("objective: [fm]", "objective: [sm]"), [], ["grid", "'sm'", "'ot'"]),
    "tolerance_for_euler": (GOOD.replace("nfe: [4]", "nfe: [4], tol: [1.0e-5]"), [], ["grid.tol", "euler"]),
    "negative_tolerance": (
        GOOD.replace("solver: [euler], nfe: [4]", "solver: [dopri5], tol: [-1.0e-5]"), [], ["grid.tol", "-1e-05"]
    ),
    "missing_data_folder": (
        GOOD.replace("dataset: {name: checkerboard}", "dataset: {name: image_folder, root: /no/such/folder}").replace(
            "kind: mlp", "kind: unet"
        ),
        [],
        ["dataset.root", "/no/such/folder", "does not exist"],
    ),
    "unreachable_address": (GOOD, ["--address", "127.0.0.1:{closed_port}"], ["--address", "cannot reach"]),
    "address_of_another_server": (GOOD, ["--address", "127.0.0.1:{http_port}"], ["--address", "not a Ray cluster", "gRPC"]),
    "address_that_never_answers": (GOOD, ["--address", "127.0.0.1:{silent_port}"], ["--address", "not a Ray cluster", "no answer"]),
    "unreachable_tracking_uri": (GOOD, ["--tracking-uri", "http://127.0.0.1:{closed_port}"], ["--tracking-uri", "cannot reach"]),
    "long_name": (GOOD.replace("name: bad-input", "name: " + "a" * 300), [], ["name", "at most 100 characters"]),
    "dataset_option_type": (GOOD.replace("{name: checkerboard}", "{name: checkerboard, size: huge}"), [], ["dataset.size", "'huge'"]),
    "dataset_option_sign": (
        GOOD.replace("{name: checkerboard}", "{name: gmm, means: [[0, 0], [1, 1]], weights: [-1, 2]}"), [], ["dataset.weights", "entry 0"]
    ),
    "variable_outside_a_path": (GOOD.replace("{name: checkerboard}", '{name: checkerboard, size: "${HOME}"}'), [], ["dataset.size", "${HOME}"]),
    "nfe_beyond_bound": (GOOD.replace("nfe: [4]", "nfe: [1000000000]"), [], ["grid.nfe[0]", "[1, 10000]"]),
    "repeated_nfe": (GOOD.replace("nfe: [4]", "nfe: [4, 4]"), [], ["grid.nfe", "repeats 4"]),
    "pairs_beside_path": (GOOD.replace("grid: {", "grid: {pairs: [[ot, fm]], "), [], ["grid.pairs", "grid.path"]),
    "more_cpus_than_this_machine": (GOOD.replace("batch_size: 32}", f"batch_size: 32, cpus_per_worker: {(os.cpu_count() or 1) + 1}}}"), [], ["train.cpus_per_worker", "this machine has"]),
    "data_folder_name_too_long": (
        GOOD.replace("dataset: {name: checkerboard}", "dataset: {name: image_folder, root: /tmp/" + "d" * 300 + "}").replace("kind: mlp", "kind: unet"),
        [], ["dataset.root", "cannot be used"],
    ),
    "storage_path_is_a_file": (GOOD + "storage_path: /etc/hostname\n", [], ["storage_path", "is not a folder"]),
    "storage_path_too_long": (GOOD + "storage_path: /tmp/" + "s" * 300 + "\n", [], ["storage_path", "cannot be used"]),
    "tracking_uri_path_too_long": (GOOD, ["--tracking-uri", "sqlite:////tmp/" + "t" * 300 + "/mlflow.db"], ["--tracking-uri", "unusable tracking URI"]),
    "tracking_uri_malformed": (GOOD, ["--tracking-uri", "http://[::1"], ["--tracking-uri", "unusable tracking URI"]),
    "batch_not_split_by_accumulation": (GOOD.replace("batch_size: 32}", "batch_size: 32, grad_accum: 3}"), [], ["train.batch_size", "multiple of 3"]),
    "model_too_big": (GOOD.replace("hidden: 16, depth: 2", "hidden: 8192, depth: 64"), [], ["model", "limits.max_parameters"]),
    # Values equal once read are one training (or one setting) twice, whatever their spelling.
    "train_value_spelled_twice": (GOOD.replace("nfe: [4]}", "nfe: [4], train: {sigma_min: [0, 0.0]}}"), [], ["grid.train.sigma_min[1]", "entry 0"]),
    "time_sampling_spelled_twice": (
        GOOD.replace("nfe: [4]}", "nfe: [4], train: {time_sampling: [{}, {kind: null}]}}"), [], ["grid.train.time_sampling[1]", "entry 0"]
    ),
    "guidance_scales_one_label": (
        GOOD.replace("{name: checkerboard}", "{name: digits}").replace("kind: mlp, hidden: 16, depth: 2", "kind: unet, model_channels: 8, channel_mult: [1], num_res_blocks: 1, attention_resolutions: []")
        .replace("batch_size: 32}", "batch_size: 32, label_dropout: 0.1}").replace("nfe: [4]}", "nfe: [4], cfg_scale: [1.0000001, 1.0000002]}"),
        [], ["grid.cfg_scale", "one setting"],
    ),
    "sinkhorn_reg_out_of_range": (
        GOOD.replace("batch_size: 32}", "batch_size: 32, coupling_options: {sinkhorn: {reg: -1}}}").replace("nfe: [4]", "nfe: [4], coupling: [sinkhorn]"),
        [], ["train.coupling_options.sinkhorn.reg", "(0, 1e+06]"],
    ),
    "grid_beyond_limits": (GOOD.replace("nfe: [4]", f"nfe: [4], seed: {list(range(10_001))}"), [], ["grid", "limits.max_trainings"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(tmp_path: Path, case: str):
    text, extra_args, expected = CASES[case]
    sweep = tmp_path / "sweeps" / "bad.yaml"
    sweep.parent.mkdir()
    sweep.write_text(text)
    with _ports() as ports:
        args = [arg.format(**ports) for arg in extra_args]
        result = fmx_here(["sweep", "sweeps/bad.yaml", *args], cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert message.startswith("error:"), message
    assert "Traceback" not in result.stderr
    for fragment in expected:
        assert fragment in message, message
    if "--" not in expected[0]:
        assert "sweeps/bad.yaml" in message  # names the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]  # no results/, no mlflow.db


@pytest.mark.parametrize("case", ["unknown_nested_key", "markup_in_a_key", "unreachable_tracking_uri"])
def test_the_console_script_ends_bad_input_as_the_cli_does(tmp_path: Path, case: str):
    """The installed `fmx` in a process of its own: the exit code, stdout and stderr the in-process runs see."""
    text, extra_args, _ = CASES[case]
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "bad.yaml").write_text(text)
    with _ports() as ports:
        args = ["sweep", "sweeps/bad.yaml", *(arg.format(**ports) for arg in extra_args)]
        here, there = fmx_here(args, cwd=tmp_path), run_fmx(args, cwd=tmp_path, timeout=120)
    assert (there.returncode, there.stdout, there.stderr) == (here.returncode, here.stdout, here.stderr) and here.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]


def test_validate_accepts_the_shipped_sweeps(tmp_path: Path):
    # cifar10.yaml and imagenet*.yaml read their data folders from the environment (validation checks the files an
    # ImageNet folder must hold: small files in the official layout), cifar10.yaml its FID detector (a stand-in).
    env = fmx_env(shipped_sweeps_env(tmp_path))
    for sweep in sorted((REPO / "sweeps").glob("*.yaml")):
        result = fmx_here(["validate", str(sweep)], cwd=tmp_path, env=env, timeout=120)
        assert result.returncode == 0, f"{sweep.name}: {result.stderr}"
        assert "ok" in result.stdout


def test_dry_run_lists_trainings_and_evaluations_without_running(tmp_path: Path):
    result = fmx_here(["sweep", str(REPO / "sweeps" / "smoke.yaml"), "--dry-run"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ot-fm-independent-s0" in result.stdout and "vp-sm-independent-s0" in result.stdout
    assert "6 evaluations" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_cifar10_sweep_without_its_data_folder_is_refused(tmp_path: Path):
    env = fmx_env({"CIFAR10_ROOT": str(tmp_path / "absent"), "FID_DETECTOR": str(stand_in_detector(tmp_path))})
    result = fmx_here(["validate", str(REPO / "sweeps" / "cifar10.yaml")], cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 2 and "dataset.root" in result.stderr and "absent" in result.stderr


SWEEP_FILES = {
    "binary": (lambda p: p.write_bytes(bytes(range(256)) * 8), "binary file"),
    "latin1": (lambda p: p.write_bytes(GOOD.replace("bad-input", "caf\xe9").encode("latin-1")), "not UTF-8 text"),
    "directory": (lambda p: p.mkdir(), "is a directory"),
    "fifo": (lambda p: os.mkfifo(p), "is not a regular file"),  # read, it would block: no writer ever comes
    "alias_bomb": (lambda p: p.write_text(BILLION_LAUGHS), "aliases"),  # once 187 s and 4 GB before a MemoryError
}


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2 and one line on stderr (after `fmx sweep`'s banner naming the store, where it got that far)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip()
    if message.startswith("MLflow tracking: "):
        message = message.partition("\n")[2]
    assert message.startswith("error:") and "\n" not in message and "Traceback" not in message, message
    assert all(fragment in message for fragment in fragments), message


@pytest.mark.parametrize("case", list(SWEEP_FILES))
def test_a_sweep_file_that_is_not_a_yaml_text_file_is_one_clear_error(tmp_path: Path, case: str):
    make, fragment = SWEEP_FILES[case]
    make(tmp_path / "bad.yaml")
    result = fmx_here(["sweep", "bad.yaml"], cwd=tmp_path, timeout=60)
    assert_one_error_line(result, "bad.yaml: ", fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_gpu_sweep_on_a_machine_without_one_is_refused_before_ray_starts(tmp_path: Path):
    from orchestrator.preflight import local_gpu_count

    if local_gpu_count() != 0:
        pytest.skip("this machine has GPUs (or cannot tell)")
    (tmp_path / "bad.yaml").write_text(GOOD.replace("batch_size: 32}", "batch_size: 32, use_gpu: true}"))
    result = fmx_here(["sweep", "bad.yaml"], cwd=tmp_path, timeout=60)
    assert_one_error_line(result, "bad.yaml: train.use_gpu", "this machine has 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_fmx_train_of_a_gpu_sweep_where_pytorch_sees_no_gpu_is_refused(tmp_path: Path):
    """`fmx train` trains on the GPU where train.use_gpu asks for one; it never falls back to the CPU unasked."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    (tmp_path / "bad.yaml").write_text(GOOD.replace("batch_size: 32}", "batch_size: 32, use_gpu: true}"))
    result = fmx_here(["train", "bad.yaml"], cwd=tmp_path, timeout=120)
    assert_one_error_line(result, "bad.yaml: train.use_gpu is true, but PyTorch sees no CUDA GPU here")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_sweep_on_a_corrupt_store_is_refused_before_ray_starts(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(GOOD)
    (tmp_path / "mlflow.db").write_bytes(b"\x00garbage" * 500)
    result = fmx_here(["sweep", "bad.yaml"], cwd=tmp_path, timeout=60)
    assert_one_error_line(result, "--tracking-uri", "mlflow.db", "not a sqlite database")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "mlflow.db"]


DAMAGED_LEDGERS = {  # a sweep's passes.json as a full disk or a hand edit can leave it
    "cut_off": b'[{"name": "tune", "config_dig',
    "not_utf8": b"\xff\xfe[]",
    "not_a_list": b'{"name": "tune"}',
    "empty_list": b"[]",
    "unknown_field": b'[{"name": "tune", "config_digest": null, "work": null, "ended": true, "extra": 1}]',
    "bad_work_item": b'[{"name": "tune", "config_digest": null, "work": [{"key": 3}], "ended": false}]',
    "ended_not_bool": b'[{"name": "tune", "config_digest": null, "work": null, "ended": "yes"}]',
}


@pytest.mark.parametrize("case", list(DAMAGED_LEDGERS))
def test_a_damaged_ledger_of_passes_is_one_line_naming_it_and_exit_2(tmp_path: Path, case: str):
    """Read as missing, a damaged passes.json would start the sweep over its own Tune state (trials trained
    twice); a TypeError on it was a traceback."""
    (tmp_path / "bad.yaml").write_text(GOOD)
    ledger = tmp_path / "results" / "bad-input" / "ray" / "passes.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(DAMAGED_LEDGERS[case])
    for args in (["sweep", "bad.yaml"], ["sweep", "bad.yaml", "--resume"]):
        result = fmx_here(args, cwd=tmp_path, timeout=60)
        assert_one_error_line(result, "passes.json", "delete", "results")
    assert ledger.read_bytes() == DAMAGED_LEDGERS[case]  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "results"]
    assert sorted(p.name for p in ledger.parent.iterdir()) == ["passes.json"]


DAMAGED_EVALUATIONS = {  # a training run's evaluations.json in the store, as a hand edit or a cut upload leaves it
    "cut_off": lambda text: text[: len(text) // 2],
    "rows_not_a_list": lambda text: json.dumps({**json.loads(text), "rows": {"a": 1}}),
    "row_without_its_setting": lambda text: json.dumps(
        {**json.loads(text), "rows": [{k: v for k, v in r.items() if k != "solver"} for r in json.loads(text)["rows"]]}
    ),
    # A value of another type (each type's cases: tests/test_rows.py), and one evaluation with two different rows.
    "field_of_another_type": lambda text: json.dumps({**json.loads(text), "rows": [{**r, "train_step": "abc"} for r in json.loads(text)["rows"]]}),
    "one_evaluation_two_rows": lambda text: json.dumps({**json.loads(text), "rows": [r for r in json.loads(text)["rows"]] * 1 + [{**r, "nll": 1.5} for r in json.loads(text)["rows"]]}),
}


@pytest.mark.slow
def test_damaged_records_of_a_sweep_are_one_line_naming_them_and_exit_2(tmp_path: Path):
    """The rows a run holds decide what a sweep reuses and what its tables show: a damaged record was a
    traceback (JSONDecodeError, TypeError) in `fmx sweep`, `--dry-run` and `fmx tables`; a damaged
    sweep-state.json was a traceback, or silently not checked, in `--resume`."""
    (tmp_path / "bad.yaml").write_text(GOOD)
    assert run_fmx(["sweep", "bad.yaml"], cwd=tmp_path, timeout=300).returncode == 0
    (record,) = (tmp_path / "mlartifacts").rglob("evaluations.json")
    good = record.read_text()
    run_id = record.parent.parent.name
    for case, damage in DAMAGED_EVALUATIONS.items():
        record.write_text(damage(good))
        for args in (["sweep", "bad.yaml"], ["sweep", "bad.yaml", "--dry-run"], ["tables", "bad-input"]):
            result = fmx_here(args, cwd=tmp_path, timeout=120)
            assert_one_error_line(result, run_id, "evaluations.json", "delete that run")
        assert not list((tmp_path / "results" / "bad-input" / "ray").glob("tune-2")), case  # no pass started
    # A row written twice is one row.
    record.write_text(json.dumps({**json.loads(good), "rows": json.loads(good)["rows"] * 2}))
    assert fmx_here(["tables", "bad-input"], cwd=tmp_path, timeout=120).returncode == 0
    assert len(pd.read_parquet(tmp_path / "results" / "bad-input" / "runs.parquet")) == len(json.loads(good)["rows"])
    record.write_text(good)
    assert fmx_here(["tables", "bad-input"], cwd=tmp_path, timeout=120).returncode == 0
    # The sweep's note of which store and experiment it logs to, read by --resume: never guessed past.
    state = tmp_path / "results" / "bad-input" / "sweep-state.json"
    kept = state.read_text()
    for damaged in ('{"tracking_uri": 5', "[]", '{"tracking_uri": 5, "experiment_id": [], "experiment_name": null}'):
        state.write_text(damaged)
        result = fmx_here(["sweep", "bad.yaml", "--resume"], cwd=tmp_path, timeout=120)
        assert_one_error_line(result, "sweep-state.json", "cannot be read", "delete")
    state.write_text(kept)
    assert run_fmx(["sweep", "bad.yaml", "--resume"], cwd=tmp_path, timeout=120).returncode == 0


def _garbage_store(tmp_path: Path) -> list[str]:
    (tmp_path / "mlflow.db").write_bytes(b"\x00garbage" * 500)
    return ["tables", "nosuch"]


def _busy_port(tmp_path: Path, held: list[socket.socket]) -> list[str]:
    make_store(tmp_path / "mlflow.db")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held.append(listener)
    return ["ui", "--port", str(listener.getsockname()[1])]


READ_ONLY = {  # case: (prepare the folder and give the command, what the message says)
    "tables_without_store": (lambda p, _: ["tables", "nosuch"], ["no MLflow store at", "mlflow.db", "fmx sweep"]),
    "report_without_store": (lambda p, _: ["report", "nosuch"], ["no MLflow store at"]),
    "ui_without_store": (lambda p, _: ["ui"], ["no MLflow store at"]),
    "tables_on_garbage": (lambda p, _: _garbage_store(p), ["not a sqlite database"]),
    "ui_on_busy_port": (_busy_port, ["port", "in use", "--port"]),  # mlflow itself exits 0 there
    "compare_with_a_margin_below_0": (lambda p, _: ["compare", "nosuch", "FM-OT", "FM-VP", "--margin", "-1"],
                                      ["--margin", "-1.0 is not a positive number"]),  # fmt: skip
}


@pytest.mark.parametrize("case", list(READ_ONLY))
def test_read_only_commands_refuse_a_missing_or_broken_store_and_create_nothing(tmp_path: Path, case: str):
    prepare, fragments = READ_ONLY[case]
    held: list[socket.socket] = []
    command = prepare(tmp_path, held)
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        result = fmx_here(command, cwd=tmp_path, timeout=60)
    finally:
        for listener in held:
            listener.close()
    assert_one_error_line(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlflow.db, no results/


def test_dry_run_of_a_big_plan_prints_a_capped_list(tmp_path: Path):
    (tmp_path / "big.yaml").write_text(GOOD.replace("nfe: [4]", f"nfe: [4], seed: {list(range(200))}"))
    result = fmx_here(["sweep", "big.yaml", "--dry-run"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ot-fm-independent-s49" in result.stdout and "ot-fm-independent-s50" not in result.stdout
    assert "... 150 more" in result.stdout and "200 evaluations" in result.stdout
    assert len(result.stdout.splitlines()) < 80


def _a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    make_store(tmp_path / "mlflow.db")


OUTPUT_FOLDERS = {  # case: (the command, what the message names); `afile` is a file, mlflow.db a store
    "tables_at_a_file": (["tables", "s", "--out-dir", "afile"], ["--out-dir", "'afile' is not a folder"]),
    "tables_under_a_file": (["tables", "s", "--out-dir", "afile/sub"], ["--out-dir", "under 'afile'"]),
    "tables_under_proc": (["tables", "s", "--out-dir", "/proc/fmx-out"], ["/proc/fmx-out"]),
    "report_at_a_file": (["report", "s", "--out-dir", "afile"], ["--out-dir", "'afile' is not a folder"]),
    "train_under_a_file": (["train", "sweeps/bad.yaml", "--out", "afile"], ["--out", "under 'afile'"]),
    "sweep_with_results_a_file": (["sweep", "sweeps/bad.yaml"], ["results folder", "results', which is not a folder"]),
    "sweep_with_its_results_a_file": (["sweep", "sweeps/bad.yaml"], ["results folder", "bad-input' is not a folder"]),
    "eval_tolerance_out_of_range": (["eval", "afile", "--tol", "5"], ["--tol", "(0, 1)"]),
    "eval_nfe_out_of_range": (["eval", "afile", "--solver", "euler", "--nfe", "0"], ["--nfe", "[1, 10000]"]),
}


@pytest.mark.parametrize("case", list(OUTPUT_FOLDERS))
def test_output_folders_that_cannot_be_made_and_options_out_of_range_are_one_line_and_exit_2(tmp_path: Path, case: str):
    command, expected = OUTPUT_FOLDERS[case]
    _a_file(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "bad.yaml").write_text(GOOD)
    if case == "sweep_with_results_a_file":
        (tmp_path / "results").write_text("a file")
    if case == "sweep_with_its_results_a_file":
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "bad-input").write_text("a file")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    result = fmx_here(command, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().startswith("error:"), result.stderr
    for fragment in expected:
        assert fragment in result.stderr, result.stderr
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_local_ray_that_cannot_start_is_one_line_naming_the_cause_and_exit_1(tmp_path: Path):
    """Ray's sockets live under the temporary folder; one whose path is too long for AF_UNIX makes Ray's
    start fail (it was a traceback)."""
    (tmp_path / "bad.yaml").write_text(GOOD)
    deep = tmp_path / ("t" * 90)
    deep.mkdir()
    result = run_fmx(["sweep", "bad.yaml"], cwd=tmp_path, env=fmx_env({"TMPDIR": str(deep), "RAY_TMPDIR": str(deep)}), timeout=120)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the local Ray did not start:") and "AF_UNIX" in last, result.stderr
    assert "Traceback" not in result.stderr
