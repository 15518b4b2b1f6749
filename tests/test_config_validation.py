"""Sweep-file validation in-process (fast): every bad value is one ConfigError naming the file and the key,
raised before anything starts; good files, the shipped sweeps and the paper's set-ups still pass.

New names are imported inside the tests that use them, so that against older code the other tests still
run (and show which defects they catch) instead of the whole module failing to import.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config_errors import ConfigError
from orchestrator.schema import SweepConfig
from orchestrator.validation import load_sweep, parse_sweep
from fm_core.solvers import SolverSetting
from orchestrator.plan import plan_sweep
from fm_core.dataset_specs import DATASET_SPECS
from tests.bad_inputs import BILLION_LAUGHS, make_store
from tests.cli_helpers import REPO
from tests.shipped_sweeps_env import shipped_sweeps_env

BASE: dict[str, Any] = {
    "name": "valid",
    "dataset": {"name": "checkerboard"},
    "model": {"kind": "mlp", "hidden": 16, "depth": 2},
    "train": {"steps": 10, "batch_size": 32},
    "eval": {"samples": 50, "likelihood_points": 10},
    "grid": {"path": ["ot"], "objective": ["fm"], "solver": ["euler"], "nfe": [4]},
}
DROP = object()  # a change that removes the key
IMAGE = {"model.kind": "unet"}
ADAPTIVE = {"grid.solver": ["dopri5"], "grid.nfe": DROP}
PAIRS = {"grid.path": DROP, "grid.objective": DROP}


def sweep(changes: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    """BASE with changes applied: keys are dotted paths ("grid.nfe"); DROP removes the key."""
    data = copy.deepcopy(BASE)
    for dotted, value in {**(changes or {}), **more}.items():
        *parents, leaf = dotted.split(".")
        holder = data
        for part in parents:
            holder = holder.setdefault(part, {})
        if value is DROP:
            holder.pop(leaf, None)
        else:
            holder[leaf] = value
    return data


def refused(data: dict[str, Any], file: str = "s.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_sweep(data, file)
    message = str(caught.value)
    assert message.startswith(f"{file}: ") and "\n" not in message and len(message) < 400, message
    return caught.value


def assert_refused(data: dict[str, Any], key: str, *fragments: str) -> ConfigError:
    err = refused(data)
    assert err.key == key, str(err)
    for fragment in fragments:
        assert fragment in str(err), str(err)
    return err


def write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# --------------------------------------------------------------------------------------------
# 12. Every number bounded by what it means; bools, NaN, infinity and floats-for-ints refused
# --------------------------------------------------------------------------------------------

OUT_OF_RANGE = {
    "nfe_huge": ({"grid.nfe": [1_000_000_000]}, "grid.nfe[0]", "[1, 10000]"),
    "nfe_float": ({"grid.nfe": [8.5]}, "grid.nfe[0]", "an integer"),
    "nfe_whole_float": ({"grid.nfe": [8.0]}, "grid.nfe[0]", "an integer"),
    "nfe_1e30": ({"grid.nfe": [1e30]}, "grid.nfe[0]", "an integer"),
    "nfe_bool": ({"grid.nfe": [True]}, "grid.nfe[0]", "got True"),
    "nfe_string": ({"grid.nfe": ["8"]}, "grid.nfe[0]", "an integer"),
    "cpus_huge": ({"train.cpus_per_worker": 1e6}, "train.cpus_per_worker", "[0.0001, 1024]"),
    "cpus_inf": ({"train.cpus_per_worker": math.inf}, "train.cpus_per_worker", "finite"),
    "cpus_nan": ({"train.cpus_per_worker": math.nan}, "train.cpus_per_worker", "finite"),
    "cpus_zero": ({"train.cpus_per_worker": 0}, "train.cpus_per_worker", "[0.0001"),
    "cpus_bool": ({"train.cpus_per_worker": True}, "train.cpus_per_worker", "got True"),
    "seed_2_70": ({"grid.seed": [2**70]}, "grid.seed[0]", "[0, 2**31 - 1]"),
    "seed_negative": ({"grid.seed": [-1]}, "grid.seed[0]", "[0, 2**31 - 1]"),
    "seed_float": ({"grid.seed": [1.5]}, "grid.seed[0]", "an integer"),
    "eval_seed_2_63": ({"eval.seed": 2**63}, "eval.seed", "[0, 2**31 - 1]"),
    "lr_zero": ({"train.lr": 0}, "train.lr", "(0, 1)"),
    "lr_one": ({"train.lr": 1.0}, "train.lr", "(0, 1)"),
    "lr_nan": ({"train.lr": math.nan}, "train.lr", "finite"),
    "lr_bool": ({"train.lr": True}, "train.lr", "got True"),
    "lr_word": ({"train.lr": "fast"}, "train.lr", "got 'fast'"),
    "lr_huge_int": ({"train.lr": 10**400}, "train.lr", "(0, 1)"),
    "tol_zero": ({**ADAPTIVE, "grid.tol": [0.0]}, "grid.tol[0]", "(0, 1)"),
    "tol_one": ({**ADAPTIVE, "grid.tol": [1.0]}, "grid.tol[0]", "(0, 1)"),
    "tol_inf": ({**ADAPTIVE, "grid.tol": [math.inf]}, "grid.tol[0]", "finite"),
    "tol_nan": ({**ADAPTIVE, "grid.tol": [math.nan]}, "grid.tol[0]", "finite"),
    "reference_tol_one": ({"eval.reference_tol": 1}, "eval.reference_tol", "(0, 1)"),
    "reference_tol_nan": ({"eval.reference_tol": math.nan}, "eval.reference_tol", "finite"),
    "sigma_min_one": ({"train.sigma_min": 1.0}, "train.sigma_min", "[0, 1)"),
    "sigma_min_negative": ({"train.sigma_min": -1e-4}, "train.sigma_min", "[0, 1)"),
    "path_options_unknown_path": ({"train.path_options": {"sigmoid": {"k": 1}}}, "train.path_options.sigmoid", "unknown path"),
    "path_options_unknown_option": ({"train.path_options": {"cosine": {"n": 2}}}, "train.path_options.cosine.n",
                                    "path 'cosine' has no option 'n' (its options: none)"),
    "path_options_not_a_number": ({"train.path_options": {"poly": {"n": "two"}}}, "train.path_options.poly.n", "a finite number"),
    "path_options_nan": ({"train.path_options": {"poly": {"n": math.nan}}}, "train.path_options.poly.n", "a finite number"),
    "path_options_out_of_range": ({"train.path_options": {"poly": {"n": -1}}}, "train.path_options.poly.n", "(0, 100]"),
    # Every schedule option has a range by what it means (tests/test_paths.py: each declares one).
    "path_options_poly_huge": ({"train.path_options": {"poly": {"n": 1e9}}}, "train.path_options.poly.n", "(0, 100]"),
    "path_options_vp_beta_huge": ({"train.path_options": {"vp": {"beta_max": 1e308}}}, "train.path_options.vp.beta_max", "(0, 100]"),
    "path_options_vp_eps_past_one": ({"train.path_options": {"vp": {"eps": 2.0}}}, "train.path_options.vp.eps", "(0, 0.1]"),
    "path_options_linear_vp_eps_zero": ({"train.path_options": {"linear_vp": {"eps": 0}}}, "train.path_options.linear_vp.eps", "(0, 0.1]"),
    "path_options_ve_sigma_huge": ({"train.path_options": {"ve": {"sigma_max": 1e30}}}, "train.path_options.ve.sigma_max", "(0, 10000]"),
    "coupling_options_unknown": ({"train.coupling_options": {"emd": {"reg": 1}}}, "train.coupling_options.emd", "unknown coupling"),
    "coupling_options_reg_zero": ({"train.coupling_options": {"sinkhorn": {"reg": 0}}}, "train.coupling_options.sinkhorn.reg",
                                  "(0, 1e+06]"),
    "coupling_options_reg_nan": ({"train.coupling_options": {"sinkhorn": {"reg": math.nan}}}, "train.coupling_options.sinkhorn.reg",
                                 "a finite number"),
    "coupling_options_none_for_ot": ({"train.coupling_options": {"minibatch_ot": {"reg": 0.1}}},
                                     "train.coupling_options.minibatch_ot.reg", "coupling 'minibatch_ot' has no option 'reg'"),
    "time_sampling_loc_huge": ({"train.time_sampling": {"kind": "logit_normal", "loc": 1e6}}, "train.time_sampling.loc", "[-10, 10]"),
    "path_options_ve_order": ({"train.path_options": {"ve": {"sigma_min": 5.0, "sigma_max": 1.0}}}, "train.path_options.ve",
                              "0 < sigma_min < sigma_max"),
    "steps_zero": ({"train.steps": 0}, "train.steps", "[1, 10000000]"),
    "steps_huge": ({"train.steps": 10**8}, "train.steps", "[1, 10000000]"),
    "steps_float": ({"train.steps": 10.0}, "train.steps", "an integer"),
    "batch_size_huge": ({"train.batch_size": 10**7}, "train.batch_size", "[1, 100000]"),
    "warmup_negative": ({"train.warmup_steps": -1}, "train.warmup_steps", "[0, 10000000]"),
    "grad_clip_zero": ({"train.grad_clip": 0}, "train.grad_clip", "(0, 1e+06]"),
    "grad_clip_inf": ({"train.grad_clip": math.inf}, "train.grad_clip", "finite"),
    "checkpoint_every_zero": ({"train.checkpoint_every": 0}, "train.checkpoint_every", "[1, 10000000]"),
    "log_every_float": ({"train.log_every": 2.5}, "train.log_every", "an integer"),
    "num_workers_zero": ({"train.num_workers": 0}, "train.num_workers", "[1, 1024]"),
    "num_workers_huge": ({"train.num_workers": 10**6}, "train.num_workers", "[1, 1024]"),
    "max_failures_negative": ({"train.max_failures": -1}, "train.max_failures", "[0, 100]"),
    "max_failures_huge": ({"train.max_failures": 10**9}, "train.max_failures", "[0, 100]"),
    "use_gpu_int": ({"train.use_gpu": 1}, "train.use_gpu", "boolean"),
    "use_gpu_word": ({"train.use_gpu": "yes"}, "train.use_gpu", "boolean"),
    "hidden_huge": ({"model.hidden": 10**6}, "model.hidden", "[1, 8192]"),
    "depth_zero": ({"model.depth": 0}, "model.depth", "[1, 64]"),
    "model_channels_huge": ({"model.model_channels": 4096}, "model.model_channels", "[1, 1024]"),
    "res_blocks_zero": ({"model.num_res_blocks": 0}, "model.num_res_blocks", "[1, 16]"),
    "channel_mult_empty": ({"model.channel_mult": []}, "model.channel_mult", "at least 1"),
    "channel_mult_zero": ({"model.channel_mult": [1, 0]}, "model.channel_mult[1]", "[1, 16]"),
    "attention_zero": ({"model.attention_resolutions": [0]}, "model.attention_resolutions[0]", "[1, 1024]"),
    "num_heads_zero": ({"model.num_heads": 0}, "model.num_heads", "[1, 64]"),
    "head_channels_zero": ({"model.num_head_channels": 0}, "model.num_head_channels", "-1"),
    "head_channels_float": ({"model.num_head_channels": 64.0}, "model.num_head_channels", "[1, 4096]"),
    "dropout_one": ({"model.dropout": 1.0}, "model.dropout", "[0, 1)"),
    "samples_zero": ({"eval.samples": 0}, "eval.samples", "[1, 100000]"),
    "samples_huge": ({"eval.samples": 10**9}, "eval.samples", "[1, 100000]"),
    "likelihood_points_negative": ({"eval.likelihood_points": -1}, "eval.likelihood_points", "[0, 100000]"),
    "likelihood_fixed_without_nfe": ({"eval.likelihood": {"solver": "rk4"}}, "eval.likelihood", "NFE budget of at least 4"),
    "likelihood_adaptive_with_nfe": ({"eval.likelihood": {"solver": "dopri5", "nfe": 8}}, "eval.likelihood", "not an NFE budget"),
    "likelihood_per_solver_with_tol": ({"eval.likelihood": {"solver": "per_sample_solver", "tol": 1e-3}}, "eval.likelihood", "drop tol"),
    "likelihood_unknown_solver": ({"eval.likelihood": {"solver": "leapfrog"}}, "eval.likelihood.solver", "per_sample_solver"),
    "likelihood_unknown_key": ({"eval.likelihood": {"solver": "dopri5", "atol": 1e-3}}, "eval.likelihood.atol", "unknown key"),
    "likelihood_tol_zero": ({"eval.likelihood": {"tol": 0}}, "eval.likelihood.tol", ""),
    "eval_batch_zero": ({"eval.batch_size": 0}, "eval.batch_size", "[1, 100000]"),
    "dequant_zero": ({"eval.dequant_draws": [0]}, "eval.dequant_draws[0]", "[1, 1000]"),
    "dequant_huge": ({"eval.dequant_draws": 10**6}, "eval.dequant_draws[0]", "[1, 1000]"),
    "dequant_empty": ({"eval.dequant_draws": []}, "eval.dequant_draws", "at least one"),
    "at_steps_zero": ({"eval.at_steps": [0]}, "eval.at_steps[0]", "[1, 10000000]"),
    "per_sample_nfe_zero": ({"eval.per_sample_nfe": 0}, "eval.per_sample_nfe", "[1, 100000]"),
    "per_sample_nfe_over_samples": ({"eval.per_sample_nfe": 51}, "eval.per_sample_nfe", "eval.samples draws only 50"),
    "nan_at_step_zero": (
        {"fault_injection": {"nan_at_step": 0, "trials": ["ot-fm-independent-s0"]}}, "fault_injection.nan_at_step", "[1,"
    ),
    "max_concurrent_zero": ({"max_concurrent_trials": 0}, "max_concurrent_trials", "[1, 10000]"),
    "max_concurrent_huge": ({"max_concurrent_trials": 10**9}, "max_concurrent_trials", "[1, 10000]"),
    "limit_zero": ({"limits": {"max_trainings": 0}}, "limits.max_trainings", "[1, 1000000]"),
    "limit_huge": ({"limits": {"max_evaluations": 10**12}}, "limits.max_evaluations", "[1, 100000000]"),
    "name_300": ({"name": "a" * 300}, "name", "at most 100"),
    "description_huge": ({"description": "x" * 20_000}, "description", "at most 10000"),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_numbers_out_of_their_range_are_refused_naming_key_and_range(case: str):
    changes, key, fragment = OUT_OF_RANGE[case]
    assert_refused(sweep(changes), key, fragment)


ACCEPTED = {
    "boundaries": {"grid.nfe": [10_000], "grid.seed": [0, 2**31 - 1], "train.lr": 0.5, "model.dropout": 0.5},
    "int_for_float": {"train.cpus_per_worker": 1, "train.grad_clip": 2},
    "fractional_cpus": {"train.cpus_per_worker": 0.5},
    "tol_near_one": {**ADAPTIVE, "grid.tol": [0.999, 1e-12]},
    "head_channels": {"model.num_head_channels": 64},
    "scalar_draws": {"eval.dequant_draws": 4},
    "per_sample_nfe_all": {"eval.per_sample_nfe": 50},
    "nulls": {"eval.reference_tol": None, "eval.batch_size": None, "train.grad_clip": None},
    "raised_limits": {"grid.seed": list(range(20)), "limits": {"max_trainings": 20, "max_evaluations": 20}},
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_values_in_range_are_accepted(case: str):
    parse_sweep(sweep(ACCEPTED[case]))


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path: Path):
    """PyYAML reads `1e-3` as a string; the sweep loader reads it as YAML 1.2 does, a float."""
    text = yaml.safe_dump(sweep(ADAPTIVE)).replace("solver:", "tol: [1e-5, 2.5E-4]\n  solver:")
    config = load_sweep(write(tmp_path, text.replace("batch_size: 32", "batch_size: 32\n  lr: 1e-3")))
    assert config.train.lr == 1e-3 and config.grid.tol == (1e-5, 2.5e-4)


@pytest.mark.parametrize(
    ("workers", "cpus", "extra", "key"),
    [(1, 8.0, 0.0, "train.cpus_per_worker"), (3, 2.0, 0.0, "train.num_workers"), (4, 1.0, 0.01, "train.num_workers"),
     (1, 4.0, 0.0, None), (2, 2.0, 0.0, None), (4, 0.9, 0.01, None)],
)  # fmt: skip
def test_local_capacity_problem_compares_a_trial_with_this_machine(workers: int, cpus: float, extra: float, key: str | None):
    from orchestrator.preflight import local_capacity_problem

    config = parse_sweep(sweep({"train.num_workers": workers, "train.cpus_per_worker": cpus, "train.batch_size": 12 * workers}))
    problem = local_capacity_problem(config, "s.yaml", extra_cpus=extra, cpus=4)
    assert (problem.key if problem else None) == key
    if problem:
        assert str(problem).startswith(f"s.yaml: {key}: ") and "this machine has 4" in str(problem)


def test_local_capacity_defaults_to_this_machine():
    from orchestrator.preflight import local_capacity_problem

    fits = parse_sweep(sweep({"train.cpus_per_worker": float(os.cpu_count() or 1)}))
    assert local_capacity_problem(fits) is None
    assert local_capacity_problem(parse_sweep(sweep({"train.cpus_per_worker": 1000.0}))) is not None


# --------------------------------------------------------------------------------------------
# 13. No list axis may repeat a value; every evaluation setting has its own label
# --------------------------------------------------------------------------------------------

REPEATS = {
    "path": ({"grid.path": ["ot", "vp", "ot"]}, "grid.path", "'ot'"),
    "objective": ({"grid.path": ["vp"], "grid.objective": ["fm", "fm"]}, "grid.objective", "'fm'"),
    "coupling": ({"grid.coupling": ["independent", "independent"]}, "grid.coupling", "'independent'"),
    "seed": ({"grid.seed": [0, 1, 0]}, "grid.seed", "repeats 0"),
    "solver": ({"grid.solver": ["euler", "euler"]}, "grid.solver", "'euler'"),
    "tol": ({**ADAPTIVE, "grid.tol": [1e-4, 1e-4]}, "grid.tol", "repeats 0.0001"),
    "tol_within_rounding": ({**ADAPTIVE, "grid.tol": [1e-4, 1.00000000000000001e-4]}, "grid.tol", "repeats 0.0001"),
    "nfe": ({"grid.nfe": [8, 8]}, "grid.nfe", "repeats 8"),
    "dequant_draws": ({"eval.dequant_draws": [1, 4, 1]}, "eval.dequant_draws", "repeats 1"),
    "at_steps": ({"eval.at_steps": [5, 5]}, "eval.at_steps", "repeats 5"),
    "at_steps_final": ({"eval.at_steps": [5, 10]}, "eval.at_steps", "repeats 10"),
    "pairs_row": ({**PAIRS, "grid.pairs": [["ot", "fm"], ["vp", "fm"], ["ot", "fm"]]}, "grid.pairs", "('ot', 'fm')"),
    "pairs_same_training": (
        {**PAIRS, "grid.pairs": [["ot", "fm"], ["ot", "fm", "independent"]]}, "grid.pairs[1]", "grid.pairs[0]"
    ),
    "fault_trials": (
        {"fault_injection": {"nan_at_step": 3, "trials": ["ot-fm-independent-s0"] * 2}}, "fault_injection.trials", "repeats"
    ),
    "attention": ({"model.attention_resolutions": [4, 4]}, "model.attention_resolutions", "repeats 4"),
}


@pytest.mark.parametrize("case", list(REPEATS))
def test_a_repeated_list_value_is_refused_and_named(case: str):
    changes, key, fragment = REPEATS[case]
    assert_refused(sweep(changes), key, fragment)


@pytest.mark.parametrize(
    ("tol", "text"), [(1e-5, "1e-05"), (1e-3, "1e-03"), (1.4e-4, "1.4e-04"), (0.5, "5e-01"), (2.5e-7, "2.5e-07")]
)
def test_tolerance_labels_are_exact_and_keep_the_documented_form(tol: float, text: str):
    assert SolverSetting("dopri5", tol=tol).label == f"dopri5_tol{text}"
    assert SolverSetting("euler", nfe_budget=8).label == "euler_nfe8"


def test_every_float_gets_a_label_that_reads_back_as_itself():
    from fm_core.solvers import tol_text

    rng = random.Random(0)
    for _ in range(2000):
        tol = rng.random() * 10 ** rng.randint(-15, -1)
        assert float(tol_text(tol)) == tol and tol_text(tol) == tol_text(float(tol_text(tol)))


def test_close_tolerances_get_distinct_labels_in_the_plan():
    plan = plan_sweep(parse_sweep(sweep({**ADAPTIVE, "grid.tol": [1e-4, 1.4e-4, 1.0000001e-4]})))
    labels = [s.label for s in plan.settings]
    assert len(set(labels)) == 3 and "dopri5_tol1e-04" in labels and "dopri5_tol1.4e-04" in labels


def test_planning_refuses_settings_that_share_a_label():
    config = parse_sweep(sweep({**ADAPTIVE, "grid.tol": [1e-4]}))
    twice = config.model_copy(update={"grid": config.grid.model_copy(update={"tol": (1e-4, 1e-4)})})
    with pytest.raises(ValueError, match="share a label"):
        plan_sweep(twice)


# --------------------------------------------------------------------------------------------
# 14. Every dataset option checked up front, as the constructors in fm_core.data and fm_core.image_data would
# --------------------------------------------------------------------------------------------

GMM = {"name": "gmm", "means": [[0.0, 0.0], [3.0, 3.0]]}
BAD_OPTIONS = {
    "checkerboard_size_word": ({"name": "checkerboard", "size": "huge"}, "size", "got 'huge'"),
    "checkerboard_size_negative": ({"name": "checkerboard", "size": -1.0}, "size", "(0, 1e+06]"),
    "checkerboard_size_inf": ({"name": "checkerboard", "size": math.inf}, "size", "finite"),
    "checkerboard_size_null": ({"name": "checkerboard", "size": None}, "size", "got None"),
    "checkerboard_cells_zero": ({"name": "checkerboard", "cells": 0}, "cells", "[1, 1000]"),
    "checkerboard_cells_float": ({"name": "checkerboard", "cells": 2.5}, "cells", "an integer"),
    "checkerboard_cells_bool": ({"name": "checkerboard", "cells": True}, "cells", "got True"),
    "checkerboard_unknown": ({"name": "checkerboard", "colour": "red"}, "colour", "valid: size, cells"),
    "8gaussians_radius_zero": ({"name": "8gaussians", "radius": 0}, "radius", "(0, 1e+06]"),
    "8gaussians_std_nan": ({"name": "8gaussians", "std": math.nan}, "std", "finite"),
    "moons_noise_negative": ({"name": "moons", "noise": -0.1}, "noise", "[0, 1e+06]"),
    "gmm_no_means": ({"name": "gmm"}, "means", "needs option 'means'"),
    "gmm_means_flat": ({**GMM, "means": [0.0, 1.0]}, "means", "K x d"),
    "gmm_means_empty": ({**GMM, "means": []}, "means", "K x d"),
    "gmm_means_ragged": ({**GMM, "means": [[0.0, 0.0], [1.0]]}, "means", "row 1 has 1"),
    "gmm_means_nan": ({**GMM, "means": [[0.0, math.nan], [1.0, 1.0]]}, "means", "row 0, entry 1"),
    "gmm_means_word": ({**GMM, "means": [[0.0, "x"], [1.0, 1.0]]}, "means", "got 'x'"),
    "gmm_means_empty_row": ({**GMM, "means": [[], []]}, "means", "row 0"),
    "gmm_stds_count": ({**GMM, "stds": [0.5, 0.5, 0.5]}, "stds", "K = 2"),
    "gmm_stds_row_length": ({**GMM, "stds": [0.5, [1.0, 0.3, 2.0]]}, "stds", "not d = 2"),
    "gmm_stds_zero": ({**GMM, "stds": [0.5, 0.0]}, "stds", "entry 1"),
    "gmm_stds_negative_scalar": ({**GMM, "stds": -1.0}, "stds", "(0, 1e+06]"),
    "gmm_stds_negative_in_row": ({**GMM, "stds": [[1.0, 1.0], [1.0, -1.0]]}, "stds", "row 1, entry 1"),
    "gmm_stds_word": ({**GMM, "stds": "wide"}, "stds", "K = 2"),
    "gmm_weights_count": ({**GMM, "weights": [1.0]}, "weights", "K = 2"),
    "gmm_weights_negative": ({**GMM, "weights": [-1.0, 2.0]}, "weights", "entry 0"),
    "gmm_weights_zero_sum": ({**GMM, "weights": [0.0, 0.0]}, "weights", "not all be zero"),
    "gmm_weights_inf": ({**GMM, "weights": [math.inf, 1.0]}, "weights", "finite"),
    "gmm_weights_scalar": ({**GMM, "weights": 1.0}, "weights", "list"),
    "digits_holdout_zero": ({"name": "digits", "holdout_fraction": 0.0}, "holdout_fraction", "(0, 1)"),
    "digits_holdout_one": ({"name": "digits", "holdout_fraction": 1.0}, "holdout_fraction", "(0, 1)"),
    "digits_split_seed_negative": ({"name": "digits", "split_seed": -1}, "split_seed", "[0, 2**32 - 1]"),
    "digits_split_seed_huge": ({"name": "digits", "split_seed": 2**40}, "split_seed", "[0, 2**32 - 1]"),
    "folder_channels_two": ({"name": "image_folder", "root": ".", "channels": 2}, "channels", "1, 3"),
    "folder_channels_bool": ({"name": "image_folder", "root": ".", "channels": True}, "channels", "got True"),
    "folder_channels_float": ({"name": "image_folder", "root": ".", "channels": 3.0}, "channels", "got 3.0"),
    "folder_image_size_zero": ({"name": "image_folder", "root": ".", "image_size": 0}, "image_size", "[1, 1024]"),
    "folder_image_size_float": ({"name": "image_folder", "root": ".", "image_size": 32.0}, "image_size", "integer"),
    "folder_holdout_half_open": ({"name": "image_folder", "root": ".", "holdout_fraction": 1.5}, "holdout_fraction", "(0, 1)"),
    "folder_root_number": ({"name": "image_folder", "root": 5}, "root", "path"),
    "folder_no_root": ({"name": "image_folder"}, "root", "needs option 'root'"),
    "cifar_root_empty": ({"name": "cifar10", "root": ""}, "root", "path"),
    "imagenet_max_images_zero": ({"name": "imagenet32", "root": ".", "max_images": 0}, "max_images", "[1, 2**31 - 1]"),
    "imagenet_max_images_float": ({"name": "imagenet64", "root": ".", "max_images": 1e5}, "max_images", "integer"),
}
IMAGE_NAMES = ("digits", "image_folder", "cifar10", "imagenet32", "imagenet64")


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_a_bad_dataset_option_is_refused_before_anything_starts(case: str):
    dataset, option, fragment = BAD_OPTIONS[case]
    extra = IMAGE if dataset["name"] in IMAGE_NAMES else {}
    assert_refused(sweep({**extra, "dataset": dataset}), f"dataset.{option}", fragment)


GOOD_OPTIONS = [
    {"name": "checkerboard", "size": 2, "cells": 6},
    {"name": "8gaussians", "radius": 2.0, "std": 0.1},
    {"name": "moons", "noise": 0},
    {**GMM},
    {**GMM, "stds": 0.5, "weights": [0, 1]},
    {**GMM, "stds": [0.5, [1.0, 0.3]], "weights": [1.0, 3.0]},
    {**GMM, "stds": [[1.0, 2.0], [0.5, 0.5]]},
    {"name": "gmm", "means": [[0.0, 1.0, 2.0]], "stds": [[0.1, 0.2, 0.3]], "weights": [2]},
]


@pytest.mark.parametrize("options", GOOD_OPTIONS, ids=lambda o: str(o)[:60])
def test_what_validation_accepts_the_dataset_constructor_builds(options: dict[str, Any]):
    from fm_core.datasets import make_dataset

    config = parse_sweep(sweep({"dataset": options}))
    built = make_dataset(config.dataset.name, **config.dataset.options)
    # The shape validation sizes the model by, before any data is read, is the one the dataset has.
    assert DATASET_SPECS[config.dataset.name].shape(config.dataset.options) == tuple(built.shape)


def test_image_shapes_known_before_reading_the_data_are_the_datasets(tmp_path: Path):
    from PIL import Image

    from fm_core.datasets import make_dataset

    for i in range(4):
        Image.new("RGB", (20, 14), (i * 40, 10, 200)).save(tmp_path / f"{i}.png")
    for name, options in [("digits", {}), ("image_folder", {"root": str(tmp_path), "image_size": 16}),
                          ("image_folder", {"root": str(tmp_path), "image_size": 8, "channels": 1})]:  # fmt: skip
        assert DATASET_SPECS[name].shape(options) == tuple(make_dataset(name, **options).shape), (name, options)


#: Cases whose values the constructors themselves reject (the others are stricter on purpose: bools,
#: strings, sizes beyond reason, an empty held-out split).
CONSTRUCTOR_REJECTS = [c for c in BAD_OPTIONS if c.startswith(("gmm", "moons", "8gaussians")) or "cells_zero" in c
                       or "size_negative" in c or "size_inf" in c]  # fmt: skip


@pytest.mark.parametrize("case", CONSTRUCTOR_REJECTS)
def test_what_validation_refuses_the_constructor_would_reject_in_every_trial(case: str):
    from fm_core.datasets import make_dataset

    dataset = dict(BAD_OPTIONS[case][0])
    with pytest.raises((ValueError, TypeError)):
        make_dataset(dataset.pop("name"), **dataset)


def test_the_specs_agree_with_the_constructors_and_a_drifted_spec_is_caught(monkeypatch: pytest.MonkeyPatch):
    import dataclasses

    import fm_core.datasets as datasets
    from fm_core.data import MoonsDataset
    from fm_core.dataset_specs import DATASET_SPECS

    assert all(datasets._spec_agrees(name, cls) for name, cls in datasets._REGISTRY.items())
    spec = DATASET_SPECS["moons"]
    drifted = dataclasses.replace(spec, options=(dataclasses.replace(spec.options[0], default=0.1),))
    monkeypatch.setitem(DATASET_SPECS, "moons", drifted)
    assert not datasets._spec_agrees("moons", MoonsDataset)


# --------------------------------------------------------------------------------------------
# 2. ${VAR} only in path fields, recorded as written; unset variables there are errors
# --------------------------------------------------------------------------------------------


def test_variables_outside_path_fields_stay_literal(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOME_SECRET", "12")
    config = parse_sweep(sweep({"description": "${SOME_SECRET}"}))
    assert config.description == "${SOME_SECRET}" and config.written_as == {}
    err = assert_refused(sweep({"dataset.size": "${SOME_SECRET}"}), "dataset.size", "got '${SOME_SECRET}'")
    assert "12" not in str(err).replace("1e+06", "")
    assert_refused(sweep({"name": "${SOME_SECRET}"}), "name", "${SOME_SECRET}")


def test_path_fields_are_expanded_and_their_text_as_written_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("DATA_HOME", str(tmp_path))
    monkeypatch.setenv("SHARED", "/mnt/shared")
    data = sweep({**IMAGE, "model.attention_resolutions": [16], "dataset": {"name": "cifar10", "root": "${DATA_HOME}/data"}, "storage_path": "${SHARED}/fmx"})
    config = parse_sweep(data)
    assert config.dataset.options["root"] == str((tmp_path / "data").resolve())
    assert config.storage_path == "/mnt/shared/fmx"
    assert config.written_as == {"dataset.root": "${DATA_HOME}/data", "storage_path": "${SHARED}/fmx"}
    assert data["dataset"]["root"] == "${DATA_HOME}/data"  # the caller's mapping is not changed
    again = SweepConfig.model_validate(config.model_dump(mode="json"))
    assert again.written_as == config.written_as and again == config
    # MLflow shows what the file says, never the value the environment gave it.
    from orchestrator.plan import plan_sweep
    from orchestrator.records import trial_params

    params = trial_params(again, plan_sweep(again).trainings[0])
    assert params["dataset.root"] == "${DATA_HOME}/data" and params["storage_path"] == "${SHARED}/fmx"
    assert str(tmp_path) not in " ".join(str(v) for v in params.values())


@pytest.mark.parametrize(
    ("changes", "key", "fragment"),
    [
        ({**IMAGE, "dataset": {"name": "cifar10", "root": "${FMX_UNSET_VAR}/x"}}, "dataset.root", "FMX_UNSET_VAR is not set"),
        ({**IMAGE, "dataset": {"name": "image_folder", "root": "${FMX_UNSET_VAR}"}}, "dataset.root", "FMX_UNSET_VAR is not set"),
        ({"storage_path": "/mnt/${FMX_UNSET_VAR}"}, "storage_path", "FMX_UNSET_VAR is not set"),
        ({"storage_path": "/mnt/${1BAD}"}, "storage_path", "not an environment variable name"),
        ({"storage_path": "/mnt/${HOME"}, "storage_path", "without a closing"),
        ({"storage_path": "~fmx_no_such_user/x"}, "storage_path", "cannot expand"),
        ({"written_as": {"dataset.root": "x"}}, "written_as", "unknown key"),
    ],
)
def test_a_bad_variable_in_a_path_field_is_an_error_naming_key_and_variable(changes: dict[str, Any], key: str, fragment: str):
    assert "FMX_UNSET_VAR" not in os.environ
    assert_refused(sweep(changes), key, fragment)


# --------------------------------------------------------------------------------------------
# 15. grid.pairs beside grid.path / objective / coupling written in the file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "other"),
    [
        ({"grid.objective": DROP, "grid.pairs": [["ot", "fm"]]}, "grid.path"),
        ({"grid.path": DROP, "grid.pairs": [["ot", "fm"]]}, "grid.objective"),
        ({"grid.pairs": [["vp", "fm"]]}, "grid.path"),
        ({**PAIRS, "grid.coupling": ["independent"], "grid.pairs": [["ot", "fm", "minibatch_ot"]]}, "grid.coupling"),
    ],
)
def test_pairs_beside_the_axes_they_replace_are_a_contradiction(changes: dict[str, Any], other: str):
    assert_refused(sweep(changes), "grid.pairs", other)


def test_pairs_with_the_couplings_their_short_rows_use_are_fine():
    rows = [["ot", "fm"], ["vp", "fm"], ["ot", "fm", "minibatch_ot"]]
    config = parse_sweep(sweep({**PAIRS, "grid.coupling": ["independent"], "grid.pairs": rows}))
    assert [k.trial_id for k in plan_sweep(config).trainings] == [
        "ot-fm-independent-s0", "vp-fm-independent-s0", "ot-fm-minibatch_ot-s0"
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# 3 and 16. The file itself: alias bombs, odd file kinds, encodings, repeated keys
# --------------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_an_alias_bomb_is_refused_at_once_in_little_memory(tmp_path: Path):
    path = write(tmp_path, BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 800
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ConfigError, match="aliases") as caught:
            load_sweep(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 20e6
    assert str(caught.value).startswith(f"{path}: ")


def test_small_anchors_aliases_and_merge_keys_keep_working(tmp_path: Path):
    text = (
        "name: anchors\n"
        "dataset: {name: checkerboard}\n"
        "model: {kind: mlp, hidden: 16, depth: 2}\n"
        "train: &train {steps: 10, batch_size: 32}\n"
        "eval: {<<: {samples: 50, likelihood_points: 10}, samples: 60}\n"
        "grid: {path: [ot], objective: [fm], solver: [euler], nfe: &budgets [4, 8], seed: *budgets}\n"
    )
    config = load_sweep(write(tmp_path, text))
    assert config.grid.seed == (4, 8) and config.eval.samples == 60 and config.train.steps == 10


FILE_PROBLEMS = {
    "recursive_alias": ("a: &a [*a]\n", "contains it"),
    "repeated_key": (yaml.safe_dump(sweep()) + "name: other\n", "key 'name' is written twice"),
    "repeated_nested_key": ("grid: {nfe: [4], nfe: [8]}\n", "key 'nfe' is written twice"),
    "latin1": ("name: caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    "binary": (bytes(range(256)) * 4, "binary file"),
    "control_character": ("name: a\x01b\n", "unacceptable character"),
    "deep_nesting": ("x: " + "[" * 5000 + "]" * 5000 + "\n", "malformed YAML"),
    "too_big": ("x: [" + ", ".join(["1"] * 150_000) + "]\n", "at most 256 KiB"),
    "not_a_mapping": ("- a\n- b\n", "mapping"),
}


@pytest.mark.parametrize("case", list(FILE_PROBLEMS))
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, case: str):
    content, fragment = FILE_PROBLEMS[case]
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


PYTHON_TAGS = {  # what an unsafe YAML loader would build or call, each meant to create `ran` if it ran
    "apply": "name: !!python/object/apply:os.system ['touch {ran}']\n",
    "new": "name: !!python/object/new:subprocess.Popen [['touch', '{ran}']]\n",
    "name": "name: !!python/name:os.system\n",
    "module": "name: !!python/module:os\n",
}


@pytest.mark.parametrize("case", list(PYTHON_TAGS))
def test_a_sweep_file_from_shared_storage_cannot_run_code(tmp_path: Path, case: str):
    """A sweep file may come from shared storage: its `!!python/...` tags are refused by name, never built."""
    ran = tmp_path / "ran"
    path = write(tmp_path, PYTHON_TAGS[case].format(ran=ran))
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: malformed YAML: ") and "python/" in message and "\n" not in message, message
    assert not ran.exists()


@pytest.mark.timeout(10)
def test_a_directory_or_a_fifo_is_named_for_what_it_is_and_never_read(tmp_path: Path):
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "fifo.yaml")  # no writer: opening it for reading would block forever
    with pytest.raises(ConfigError, match="is a directory"):
        load_sweep(tmp_path / "dir.yaml")
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_sweep(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------------------------
# 16. MLflow stores, checked read-only without MLflow
# --------------------------------------------------------------------------------------------


STORES = {
    "mlflow": (lambda p: make_store(p), None, None),
    "garbage": (lambda p: p.write_bytes(os.urandom(4096)), "not a sqlite database", "not a sqlite database"),
    "other_sqlite": (lambda p: make_store(p, ("people",)), "not an MLflow store", "not an MLflow store"),
    "truncated": (
        lambda p: p.write_bytes(make_store(p).read_bytes()[:100] + b"\1" * 4000), "damaged", "damaged"
    ),
    "missing": (lambda p: None, None, "no MLflow store at"),
    "empty": (lambda p: p.write_bytes(b""), None, "no MLflow store at"),
    "no_tables": (lambda p: make_store(p, ()), None, "no MLflow store at"),
    "directory": (lambda p: p.mkdir(), "is a directory", "is a directory"),
}


@pytest.mark.parametrize("case", list(STORES))
def test_sqlite_store_check(tmp_path: Path, case: str):
    from orchestrator.store_check import check_sqlite_store

    make, for_sweep, for_reading = STORES[case]
    db = tmp_path / "mlflow.db"
    make(db)
    before = sorted(tmp_path.iterdir())
    for must_exist, expected in ((False, for_sweep), (True, for_reading)):
        problem = check_sqlite_store(db, must_exist=must_exist)
        assert (problem is None) == (expected is None) and (expected is None or expected in problem), problem
    assert sorted(tmp_path.iterdir()) == before  # read-only: no journal, no new database


def test_existing_store_for_read_only_commands(tmp_path: Path):
    from orchestrator.store_check import check_existing_store, sqlite_path

    assert sqlite_path(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db"
    assert sqlite_path("sqlite:///mlflow.db") == Path("mlflow.db") and sqlite_path("http://h:5000") is None
    assert "no MLflow store" in check_existing_store(f"sqlite:///{tmp_path}/mlflow.db")
    assert "no MLflow store" in check_existing_store(str(tmp_path / "mlruns"))
    assert check_existing_store(f"sqlite:///{make_store(tmp_path / 'mlflow.db')}") is None
    assert check_existing_store("http://127.0.0.1:1") is None  # a server answers for itself
    assert not (tmp_path / "mlruns").exists()


def test_ui_counts_a_server_that_never_served_as_failed():
    import subprocess
    import sys

    from orchestrator.ui import port_problem, wait_until_served

    for code in ("pass", "raise SystemExit(3)"):  # a server that exits without ever answering did not serve
        process = subprocess.Popen([sys.executable, "-c", code])
        assert wait_until_served("http://127.0.0.1:9", process, timeout=30) is False
        process.wait()
    assert "not a TCP port" in port_problem(70000)


# --------------------------------------------------------------------------------------------
# 17. Planning is linear, and grids beyond `limits` are refused from their axes' lengths
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_million_evaluations_validate_and_plan_in_seconds():
    data = sweep({"grid.path": ["ot", "vp"], "grid.coupling": ["independent", "minibatch_ot"],
                  "grid.seed": list(range(2500)), "grid.nfe": list(range(1, 101)),
                  "fault_injection": {"nan_at_step": 3, "trials": ["vp-fm-minibatch_ot-s2499"]}})  # fmt: skip
    start = time.perf_counter()
    plan = plan_sweep(parse_sweep(data))
    assert plan.num_evaluations == 1_000_000 and len(plan.trainings) == 10_000
    assert time.perf_counter() - start < 5


@pytest.mark.timeout(60)
def test_36000_trainings_plan_in_seconds_once_the_limit_is_raised():
    data = sweep({"grid.path": ["ot", "vp", "ve"], "grid.coupling": ["independent", "minibatch_ot"],
                  "grid.seed": list(range(6000)), "limits": {"max_trainings": 36_000}})  # fmt: skip
    start = time.perf_counter()
    assert len(plan_sweep(parse_sweep(data)).trainings) == 36_000
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"grid.seed": list(range(10_001))}, "10001 trainings exceed limits.max_trainings = 10000"),
        ({"grid.seed": list(range(101)), "limits": {"max_trainings": 100}}, "101 trainings exceed"),
        ({"grid.seed": list(range(101)), "grid.nfe": list(range(1, 10_001))}, "1010000 evaluations exceed"),
        ({"grid.nfe": [4, 8], "limits": {"max_evaluations": 1}}, "2 evaluations exceed limits.max_evaluations = 1"),
    ],
)
def test_a_grid_beyond_its_limits_is_refused_saying_how_to_raise_them(changes: dict[str, Any], fragment: str):
    assert_refused(sweep(changes), "grid", fragment, "limits: {max_")


def test_the_limits_are_checked_from_axis_lengths_before_any_plan_is_built(monkeypatch: pytest.MonkeyPatch):
    import orchestrator.plan

    def no_plan(config: SweepConfig) -> None:
        raise AssertionError("the whole plan was built")

    monkeypatch.setattr(orchestrator.plan, "plan_sweep", no_plan)
    data = sweep({"grid.seed": list(range(60_000)), "fault_injection": {"nan_at_step": 3, "trials": ["x"]}})
    assert_refused(data, "grid", "trainings exceed")


@pytest.fixture
def data_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable, value in shipped_sweeps_env(tmp_path).items():
        monkeypatch.setenv(variable, value)


@pytest.mark.usefixtures("data_folders")
def test_counts_match_the_plan_for_every_shipped_sweep_and_some_grids():
    from orchestrator.plan import count_evaluations, count_trainings

    configs = [load_sweep(f) for f in sorted((REPO / "sweeps").glob("*.yaml"))]
    configs += [
        parse_sweep(sweep({"grid.path": ["ot", "vp"], "grid.objective": ["fm", "sm"], "invalid": "skip",
                           "grid.coupling": ["independent", "minibatch_ot"], "grid.seed": [0, 1, 2],
                           "eval.at_steps": [2, 5]})),
        parse_sweep(sweep({**PAIRS, "grid.pairs": [["vp", "sm"], ["ot", "fm", "minibatch_ot"]], "grid.seed": [3, 4]})),
    ]  # fmt: skip
    assert len(configs) >= 9
    for config in configs:
        plan = plan_sweep(config)
        assert count_trainings(config) == len(plan.trainings)
        assert count_evaluations(config) == plan.num_evaluations


@pytest.mark.usefixtures("data_folders")
def test_every_shipped_sweep_validates_with_its_paper_set_up():
    for file in sorted((REPO / "sweeps").glob("*.yaml")):
        load_sweep(file)
    cifar = load_sweep(REPO / "sweeps" / "cifar10.yaml")
    assert (cifar.model.model_channels, cifar.train.steps, cifar.eval.samples, cifar.train.num_workers) == (256, 400_000, 10_000, 8)
    assert cifar.written_as == {"dataset.root": "${CIFAR10_ROOT}", "eval.fid.detector": "${FID_DETECTOR}"}
    assert cifar.eval.fid is not None and (cifar.eval.fid.samples, cifar.eval.fid.reference.split) == (50_000, "train")


# --------------------------------------------------------------------------------------------
# 12. a model too big for any machine, or one that cannot fit its dataset's shape
# --------------------------------------------------------------------------------------------

DIGITS_UNET = {"dataset": {"name": "digits"}, "model.kind": "unet", "model.model_channels": 32, "model.channel_mult": [1, 2],
               "model.attention_resolutions": [4], "model.num_heads": 2}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"model.hidden": 8192, "model.depth": 64}, ["mlp of 4,228,423,682 parameters", "limits.max_parameters = 1,000,000,000", "63 GiB"]),
        ({**DIGITS_UNET, "model.model_channels": 1024, "model.channel_mult": [16, 16], "model.num_res_blocks": 16},
         ["unet of", "limits.max_parameters"]),
        ({**DIGITS_UNET, "model.channel_mult": [1, 2, 2, 2, 2]}, ["image_size=8 must be divisible", "shape (1, 8, 8)"]),
        ({**DIGITS_UNET, "model.attention_resolutions": [16]}, ["attention_resolutions [16] never occur"]),
        ({**DIGITS_UNET, "model.num_heads": 3}, ["not divisible by num_heads=3"]),
        ({**DIGITS_UNET, "model.num_head_channels": 24}, ["not divisible by num_head_channels=24"]),
        ({**DIGITS_UNET, "dataset": {"name": "image_folder", "root": ".", "image_size": 12},
          "model.channel_mult": [1, 2, 2, 2]}, ["image_size=12 must be divisible by 2**(len(channel_mult)-1)=8"]),
    ],
)
def test_a_model_too_big_or_unfit_for_its_dataset_is_refused_at_validation(changes: dict[str, Any], fragments: list[str]):
    assert_refused(sweep(changes), "model", *fragments)


def test_a_big_model_is_accepted_once_the_file_raises_the_limit():
    big = sweep({"model.hidden": 8192, "model.depth": 64})
    assert parse_sweep({**big, "limits": {"max_parameters": 5_000_000_000}}).model.hidden == 8192
    # A U-Net on native-size images cannot be checked before the data is read: left to the trial.
    native = sweep({**DIGITS_UNET, "dataset": {"name": "image_folder", "root": ".", "image_size": None}})
    assert parse_sweep(native).dataset.options["image_size"] is None


@pytest.mark.parametrize(
    ("train", "fragment"),
    [
        ({"batch_size": 100, "num_workers": 3, "torch_trainer": True}, "into 3 worker(s) x 1 accumulation step(s); use a multiple of 3"),
        ({"batch_size": 64, "grad_accum": 3}, "into 1 worker(s) x 3 accumulation step(s); use a multiple of 3"),
        ({"batch_size": 72, "num_workers": 4, "grad_accum": 4, "torch_trainer": True}, "use a multiple of 16"),
    ],
)
def test_a_global_batch_that_does_not_split_over_workers_and_accumulation_is_refused(train: dict, fragment: str):
    assert_refused(sweep({f"train.{k}": v for k, v in train.items()}), "train.batch_size", fragment)


def test_the_global_batch_splits_into_worker_and_micro_batches():
    config = parse_sweep(sweep({"train.batch_size": 256, "train.num_workers": 2, "train.grad_accum": 4, "train.torch_trainer": True}))
    assert (config.train.worker_batch, config.train.micro_batch) == (128, 32)


@pytest.mark.parametrize(
    ("train", "nodes", "fragment"),
    [
        ({"num_workers": 4, "cpus_per_worker": 2, "torch_trainer": True, "batch_size": 32},
         [{"CPU": 4}, {"CPU": 2}], "needs 4 workers of 2 CPU(s), but the Ray cluster's nodes hold 3 such worker(s)"),
        ({"num_workers": 2, "use_gpu": True, "batch_size": 32}, [{"CPU": 16, "GPU": 1}, {"CPU": 8}],
         "needs 2 workers of 1 CPU(s) and a GPU, but the Ray cluster's nodes hold 1"),
        ({"cpus_per_worker": 8}, [{"CPU": 4}, {"CPU": 4}], "each worker needs 8 CPU(s), but no node"),
        ({"num_workers": 3, "cpus_per_worker": 2, "torch_trainer": True, "batch_size": 33}, [{"CPU": 4}, {"CPU": 2}], None),
        ({"num_workers": 2, "use_gpu": True, "batch_size": 32}, [{"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1}], None),
    ],
)  # fmt: skip
def test_a_trial_the_clusters_nodes_cannot_hold_is_named_with_the_totals(train: dict, nodes: list, fragment: str | None):
    """Bounded by the cluster's resources once connected: a TorchTrainer places all its workers at once."""
    from orchestrator.tune_pass import schedulable_problem

    problem = schedulable_problem(parse_sweep(sweep({f"train.{k}": v for k, v in train.items()})), nodes)
    assert (problem is None) if fragment is None else (fragment in (problem or "")), problem
