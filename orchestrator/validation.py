"""A sweep file validated: the schema's errors worded as file, key and value, and the checks across keys.

Everything a sweep needs is checked here, before Ray or MLflow start, so bad input never reaches a worker
and nothing is half-written: the schema (orchestrator.schema) checks each value, and the checks here what
depends on several keys, on fm_core's capabilities (which objective trains on which path, a model's size
for its dataset), on the filesystem (data folders, storage, FID's detector and statistics) and on the plan
(how big the grid is).
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fm_core.checks import short_repr
from fm_core.dataset_specs import DATASET_SPECS, OptionError, check_options
from fm_core.fid_files import MAX_DETECTOR_BYTES, URL_SCHEMES, FidFileError, is_url, read_stats, sha256_file
from fm_core.models.spec import UNetSpec, mlp_parameter_count
from fm_core.objectives import path_objective_problem
from fm_core.solvers import SETTING_FIELDS, SolverSetting
from orchestrator.plan import (
    count_evaluations, count_trainings, eval_settings, is_valid_pair, pair_problem, path_objective_pairs, plan_sweep, time_kind,
    train_variants,
)  # fmt: skip
from orchestrator.config_errors import ConfigError, KeyedError
from orchestrator.schema import OPERATIONAL_TRAIN_FIELDS, DatasetConfig, GridConfig, SweepConfig, TrainConfig
from orchestrator.sweep_file import read_sweep_file, sweep_data


def load_sweep(file: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file; every problem is a ConfigError naming the file and key."""
    return parse_sweep(read_sweep_file(file), file)


def parse_sweep(data: Any, file: str | Path = "<sweep>", base: Path | None = None) -> SweepConfig:
    """Validate an already-loaded mapping (what YAML gave) into a SweepConfig; `${VAR}` in path fields is
    expanded from the environment (and recorded in `written_as`)."""
    data, written_as = sweep_data(file, data)
    try:
        config = SweepConfig.model_validate({**data, "written_as": written_as})
    except ValidationError as err:
        raise _first_error(file, err) from None
    _check_dataset(file, config.dataset, base or Path.cwd())
    config = _check_fid(file, config, base or Path.cwd())
    _check_storage_path(file, config)
    _check_grid_keys(file, config.grid)
    _check_train_axes(file, config)
    _check_guidance(file, config)
    _check_batch(file, config.train)
    _check_combinations(file, config)
    _check_size(file, config)
    _check_setting_labels(file, config)
    _check_model_fits(file, config)
    _check_fault_injection(file, config)
    return config


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("literal[", "tuple[", "function-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _first_error(file: str | Path, err: ValidationError) -> ConfigError:
    errors = err.errors()
    # A misspelt key also makes its correct spelling "missing": the unknown key is the real cause.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = _format_loc(first["loc"])
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, KeyedError):
        return ConfigError(file, ctx_err.key, str(ctx_err))
    if first["type"] == "extra_forbidden":
        parent, _, leaf = key.rpartition(".")
        return ConfigError(file, key, f"unknown key '{leaf}'" + (f" in '{parent}'" if parent else ""))
    if first["type"] == "missing":
        return ConfigError(file, key, "required key is missing")
    value = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(file, key, f"{message} (got {short_repr(value)})" if value is not None else message)


def _check_dataset(file: str | Path, ds: DatasetConfig, base: Path) -> None:
    """Every option as fm_core.dataset_specs describes it, and data folders that exist and hold what the dataset
    reads (where its spec says what), before anything starts."""
    try:
        check_options(ds.name, ds.options)
    except OptionError as err:
        raise ConfigError(file, f"dataset.{err.option}", str(err)) from None
    assert ds.model_extra is not None
    spec = DATASET_SPECS[ds.name]
    for option in spec.path_options:
        # Trials run in Ray workers with their own working directory: pin the folder now.
        ds.model_extra[option] = str(_existing(file, f"dataset.{option}", ds.options[option], base, folder=True))
    if spec.check_root is not None:  # the files the folder must hold (headers only, not the images)
        try:
            spec.check_root(Path(ds.options["root"]))
        except (OSError, ValueError) as err:
            raise ConfigError(file, "dataset.root", str(err)) from None


def _existing(file: str | Path, key: str, text: str, base: Path, folder: bool) -> Path:
    """The absolute path of an existing data folder (folder=True) or regular file that `text` names."""
    path = _user_path(file, key, text)
    path = path if path.is_absolute() else base / path
    what, kind = ("data folder", "a folder") if folder else ("file", "a regular file")
    try:
        found, exists = (path.is_dir() if folder else path.is_file()), path.exists()
        resolved = path.resolve()
    except (OSError, ValueError) as err:  # a name too long for the filesystem, a NUL byte
        raise ConfigError(file, key, f"{what} '{text[:200]}' cannot be used: {getattr(err, 'strerror', None) or err}") from None
    if not found:
        raise ConfigError(file, key, f"{what} '{text}' " + (f"is not {kind}" if exists else "does not exist"))
    return resolved


def _check_fid(file: str | Path, config: SweepConfig, base: Path) -> SweepConfig:
    """eval.fid before anything runs: a dataset of images (its spec's `fid_splits`), a detector that is the file
    its sha256 names, a statistics file that reads. Returns the config with the detector's path pinned and its
    sha256 recorded (trials refuse any other file), and the statistics file's path pinned."""
    fid = config.eval.fid
    if fid is None:
        return config
    splits = DATASET_SPECS[config.dataset.name].fid_splits
    if not splits:
        images = ", ".join(name for name, spec in DATASET_SPECS.items() if spec.fid_splits)
        raise ConfigError(file, "eval.fid", f"FID measures images; dataset '{config.dataset.name}' has none ({images} have)")
    reference = fid.reference
    if reference.split is not None and reference.split not in splits:
        raise ConfigError(file, "eval.fid.reference.split", f"dataset '{config.dataset.name}' has splits {', '.join(splits)}")
    if reference.stats is not None:
        path = _existing(file, "eval.fid.reference.stats", reference.stats, base, folder=False)
        try:
            read_stats(path)
        except FidFileError as err:
            raise ConfigError(file, "eval.fid.reference.stats", str(err)) from None
        reference = reference.model_copy(update={"stats": str(path)})
    detector, sha256 = _check_detector(file, fid.detector, fid.detector_sha256, base)
    fid = fid.model_copy(update={"detector": detector, "detector_sha256": sha256, "reference": reference})
    return config.model_copy(update={"eval": config.eval.model_copy(update={"fid": fid})})


def _check_detector(file: str | Path, text: str, expected: str | None, base: Path) -> tuple[str, str]:
    """The detector's pinned path (or URL) and sha256: a local file is hashed and must match `expected` where
    given; a URL is fetched only by a trial, so it needs `expected`."""
    if is_url(text):
        if text.split("://", 1)[0].lower() not in URL_SCHEMES:
            raise ConfigError(file, "eval.fid.detector", f"'{text[:200]}': a detector URL is one of {', '.join(URL_SCHEMES)}")
        if expected is None:
            raise ConfigError(file, "eval.fid.detector_sha256", "a detector named by URL needs its sha256: it is downloaded "
                                                                 "once and refused unless its bytes have it")  # fmt: skip
        return text, expected
    path = _existing(file, "eval.fid.detector", text, base, folder=False)
    try:
        actual = sha256_file(path, MAX_DETECTOR_BYTES)
    except (OSError, FidFileError) as err:
        raise ConfigError(file, "eval.fid.detector", f"cannot read '{text[:200]}': {getattr(err, 'strerror', None) or err}") from None
    if expected is not None and actual != expected:
        raise ConfigError(
            file, "eval.fid.detector_sha256", f"the detector '{text[:200]}' has sha256 {actual}, not {expected}: "
            "a different file; fetch it again, or correct the checksum",
        )
    return str(path), actual


def _user_path(file: str | Path, key: str, text: str) -> Path:
    try:
        return Path(text).expanduser()
    except RuntimeError as err:  # ~nosuchuser
        raise ConfigError(file, key, f"cannot expand '{text}': {err}") from None


def _check_storage_path(file: str | Path, config: SweepConfig) -> None:
    if config.storage_path is not None and "://" not in config.storage_path:
        if not config.storage_path.strip():
            raise ConfigError(file, "storage_path", "must be a folder (or omitted for results/<name>)")
        path = _user_path(file, "storage_path", config.storage_path)
        try:  # the folder may not exist yet (a sweep creates it), but must be able to
            if path.exists() and not path.is_dir():
                raise ConfigError(file, "storage_path", f"'{config.storage_path}' is not a folder")
            path.resolve()
            os.lstat(path if path.exists() else path.parent if path.parent.exists() else Path("/"))
            for part in path.parts:
                if len(part.encode()) > 255:
                    raise OSError(errno.ENAMETOOLONG, "File name too long")
        except (OSError, ValueError) as err:
            raise ConfigError(
                file, "storage_path", f"'{config.storage_path[:200]}' cannot be used: {getattr(err, 'strerror', None) or err}"
            ) from None


def _check_grid_keys(file: str | Path, grid: GridConfig) -> None:
    """grid.pairs replaces path x objective: written beside them, one of the two would silently win."""
    if grid.pairs is None:
        return
    for key in ("path", "objective"):
        if key in grid.model_fields_set:
            raise ConfigError(file, "grid.pairs", f"lists rows of path and objective, so grid.{key} is contradictory; remove one")
    if "coupling" in grid.model_fields_set and all(len(row) == 3 for row in grid.pairs):
        raise ConfigError(
            file, "grid.pairs", "every row names its coupling, so grid.coupling would apply to none; remove one"
        )


def _check_train_axes(file: str | Path, config: SweepConfig) -> None:
    """grid.train: options of `train` that a training computes with (not its length or how it runs), each
    value valid as that option, none repeated, none also fixed in `train`."""
    fixed = OPERATIONAL_TRAIN_FIELDS | {"steps", "num_workers", "label_dropout"}
    for name, values in (config.grid.train or {}).items():
        key = f"grid.train.{name}"
        if name not in TrainConfig.model_fields:
            raise ConfigError(file, key, f"unknown training option '{name}'; an axis is one of train's options")
        if name in fixed:
            raise ConfigError(file, key, f"train.{name} cannot be an axis: it decides how a training runs or "
                                         "where its evaluations are, not what it computes; sweep it in another file")  # fmt: skip
        if name in config.train.model_fields_set:
            raise ConfigError(file, key, f"train.{name} is also set in train; remove one")
        if not values:
            raise ConfigError(file, key, "an axis needs at least one value")
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            try:
                train = TrainConfig.model_validate({**config.train.model_dump(), name: value})
            except ValidationError as err:
                raise ConfigError(file, f"{key}[{i}]", _first_error(file, err).message) from None
            # Compared as validated, not as written: 0 and 0.0, {} and {kind: null} are one value, one training.
            text = json.dumps(train.model_dump(mode="json")[name], sort_keys=True)
            if text in seen:
                raise ConfigError(file, f"{key}[{i}]", f"{value!r} is the value of entry {seen[text]} ({values[seen[text]]!r}) "
                                                       "once read; list each value once")  # fmt: skip
            seen[text] = i
            _check_batch(file, train)


def _check_guidance(file: str | Path, config: SweepConfig) -> None:
    """A class-conditional model needs labels in the data; guidance scales need a class-conditional model."""
    spec = DATASET_SPECS[config.dataset.name]
    if config.train.label_dropout is not None and not spec.has_labels:
        labelled = ", ".join(name for name, s in DATASET_SPECS.items() if s.has_labels)
        raise ConfigError(file, "train.label_dropout", f"dataset '{config.dataset.name}' has no class labels ({labelled} have)")
    if config.grid.cfg_scale and config.train.label_dropout is None:
        raise ConfigError(file, "grid.cfg_scale", "guidance needs a class-conditional model: set train.label_dropout (e.g. 0.1)")


def _check_batch(file: str | Path, train: TrainConfig) -> None:
    """batch_size is the global batch: it must split evenly over the workers and their accumulation steps."""
    parts = train.num_workers * train.grad_accum
    if train.batch_size % parts:
        raise ConfigError(
            file, "train.batch_size", f"the global batch {train.batch_size} does not split into {train.num_workers} "
            f"worker(s) x {train.grad_accum} accumulation step(s); use a multiple of {parts}",
        )


def _check_combinations(file: str | Path, config: SweepConfig) -> None:
    pairs = path_objective_pairs(config)
    kinds = list(dict.fromkeys(time_kind(config, v) for v in train_variants(config, only="time_sampling")))
    bad = [(p, o, k) for p, o in pairs for k in kinds if not is_valid_pair(p, o, k)]
    if bad and config.invalid == "reject":
        p, o, k = bad[0]
        where = "grid.train.time_sampling" if config.grid.train and "time_sampling" in config.grid.train else "train.time_sampling.kind"
        key = "grid" if path_objective_problem(p, o) else where
        raise ConfigError(
            file, key, f"{pair_problem(p, o, k)}; remove it, list grid.pairs explicitly, or set `invalid: skip`"
        )
    if not [pair for pair in pairs for k in kinds if is_valid_pair(*pair, k)]:
        raise ConfigError(file, "grid", "no valid (path, objective) combination is left to train")


def _check_size(file: str | Path, config: SweepConfig) -> None:
    """A grid beyond `limits` is refused from the product of its axes, before any list is built."""
    for key, count in (("max_trainings", count_trainings(config)), ("max_evaluations", count_evaluations(config))):
        limit = getattr(config.limits, key)
        if count > limit:
            what = key.removeprefix("max_")
            raise ConfigError(
                file, "grid", f"{count} {what} exceed limits.{key} = {limit}; shrink the grid, or raise the limit "
                f"with a top-level `limits: {{{key}: {count}}}` if you mean it",
            )


def _check_setting_labels(file: str | Path, config: SweepConfig) -> None:
    """Each evaluation setting is one label (its metric names, child runs and table rows): values that differ
    beyond the digits a label shows (cfg_scale 1.0000001 and 1.0000002) would be one setting twice."""
    first: dict[str, SolverSetting] = {}
    for setting in eval_settings(config):
        earlier = first.setdefault(setting.label, setting)
        if earlier is setting:
            continue
        name = next(n for n in SETTING_FIELDS if getattr(earlier, n) != getattr(setting, n))
        axis = {"nfe_budget": "nfe"}.get(name, name)
        raise ConfigError(file, f"grid.{axis}", f"{getattr(earlier, name)!r} and {getattr(setting, name)!r} are one "
                                                f"setting, '{setting.label}', at the digits fmx shows; list values that differ more")  # fmt: skip


def _check_model_fits(file: str | Path, config: SweepConfig) -> None:
    """The network fits its dataset's shape (a U-Net's levels divide the image, attention where feature maps
    exist, heads divide channels) and stays within limits.max_parameters: refused here, not in every trial."""
    model = config.model
    shape = DATASET_SPECS[config.dataset.name].shape(config.dataset.options)
    if shape is None:  # native image sizes: only the data tells; the trial checks it
        return
    if model.kind == "mlp":
        count = mlp_parameter_count(math.prod(shape), model.hidden, model.depth)
    else:
        spec = UNetSpec(in_channels=shape[0], image_size=shape[-1], **model.options)
        try:
            spec.check()
        except ValueError as err:
            raise ConfigError(file, "model", f"{err} (dataset '{config.dataset.name}': samples of shape {shape})") from None
        count = spec.parameter_count()
    limit = config.limits.max_parameters
    if count > limit:
        raise ConfigError(
            file, "model", f"{model.kind} of {count:,} parameters exceeds limits.max_parameters = {limit:,} (about "
            f"{16 * count / 2**30:.0f} GiB to train in fp32 with Adam); shrink it, or raise the limit with a "
            f"top-level `limits: {{max_parameters: {count}}}` if you mean it",
        )


def _check_fault_injection(file: str | Path, config: SweepConfig) -> None:
    if config.fault_injection is None:
        return
    ids = {key.trial_id for key in plan_sweep(config).trainings}
    unknown = [t for t in config.fault_injection.trials if t not in ids]
    if unknown:
        some = sorted(ids)[:10]
        more = f" and {len(ids) - len(some)} more" if len(ids) > len(some) else ""
        raise ConfigError(file, "fault_injection.trials", f"{unknown} are not trials of this sweep: {some}{more}")

