"""Reading a sweep file safely, and `${VAR}` in its path fields: what YAML gave, before the schema sees it.

A sweep file may come from shared storage, so reading it must not run code, block, or exhaust memory: it is
read only as a small UTF-8 regular file (a FIFO or device is never read), parsed by PyYAML's SafeLoader
(plain scalars, lists and mappings; `!!python/...` tags refused), and its tree, counting each YAML *alias
as a copy of its &anchor, is bounded before anything walks it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fm_core.dataset_specs import DATASET_SPECS
from orchestrator.fid_config import FID_PATH_KEYS
from orchestrator.config_errors import ConfigError

#: A sweep file is a few KiB; a bigger one is a mistake (or an attack), refused before YAML parses it.
MAX_FILE_BYTES = 256 * 1024
#: Values in the file counting every YAML *alias as a copy of its &anchor: a "billion laughs" file of a few
#: hundred bytes expands to billions; the largest shipped sweep has about a hundred.
MAX_NODES = 100_000


def read_sweep_file(file: str | Path) -> Any:
    """The file's YAML as plain data (mappings, lists, scalars), or a ConfigError naming the file: not a small
    UTF-8 regular file, or malformed YAML. What the data holds is checked by `sweep_data` and the schema."""
    text = _read_sweep_text(file)
    try:
        # _SweepLoader is PyYAML's SafeLoader (C or Python) plus two checks: it builds only plain scalars, lists
        # and mappings, never Python objects (`!!python/...` tags are refused), so a sweep file from shared
        # storage cannot run code. Alias bombs are refused after this by counting the expanded tree's size.
        return yaml.load(text, Loader=_SweepLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(file, "", f"malformed YAML: {_yaml_problem(err)}") from None


def sweep_data(file: str | Path, data: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """What YAML gave (or a test's mapping), as the schema takes it: a mapping of bounded size whose path
    fields have `${VAR}` expanded from the environment; and {dotted key: the text as written} for each
    value that was expanded (recorded as `written_as`)."""
    if not isinstance(data, dict):
        raise ConfigError(file, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")
    _check_tree_size(file, data)
    if "written_as" in data:
        raise ConfigError(file, "written_as", "unknown key 'written_as' (fmx records it itself)")
    return _expand_paths(file, data)


# --------------------------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------------------------


def _read_sweep_text(file: str | Path) -> str:
    """The file's text, or a ConfigError for what is not a small UTF-8 regular file. A FIFO is never read
    (it would block until some writer came); the file is opened non-blocking in case one took its place."""
    _check_file_kind(file, _os_call(file, os.stat))
    with os.fdopen(_os_call(file, lambda f: os.open(f, os.O_RDONLY | os.O_NONBLOCK)), "rb") as f:
        _check_file_kind(file, os.fstat(f.fileno()))
        raw = f.read(MAX_FILE_BYTES + 1)
    return _decode(file, raw)


def _os_call(file: str | Path, call: Callable[[str | Path], Any]) -> Any:
    """call(file), its OSError worded for the user."""
    try:
        return call(file)
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name
        raise ConfigError(file, "", "sweep file not found") from None
    except OSError as err:
        raise ConfigError(file, "", f"cannot read the sweep file: {err.strerror}") from None


def _check_file_kind(file: str | Path, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(file, "", "is a directory, not a sweep file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(file, "", "is not a regular file (a FIFO, device or socket); give a YAML file")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(file, "", f"is {info.st_size} bytes; a sweep file is at most {MAX_FILE_BYTES // 1024} KiB")


def _decode(file: str | Path, raw: bytes) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(file, "", f"is over {MAX_FILE_BYTES // 1024} KiB; a sweep file is far smaller")
    if b"\0" in raw:
        raise ConfigError(file, "", "is a binary file (it contains NUL bytes), not YAML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            file, "", f"is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None


_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _SweepLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML with two fixes of YAML 1.1 as PyYAML reads it: `1e-5` is a number (YAML 1.2; PyYAML makes
    it a string), and a key written twice in one mapping is an error instead of the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key_node.value}' is written twice (lines {lines[key_node.value]} and {line})",
                    key_node.start_mark,
                )
            lines[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


_SweepLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789."))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if isinstance(err, yaml.reader.ReaderError):
        return f"position {err.position}: unacceptable character #x{err.character:04x}: {err.reason}"
    problem = getattr(err, "problem", None) or str(err)
    return where + " ".join(str(problem).split())


def _check_tree_size(file: str | Path, data: Any) -> None:
    """Refuse a file whose values, counting each YAML *alias as a copy of its &anchor, exceed MAX_NODES,
    or that contains itself: counted over shared nodes once (memoised), never expanded."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node
        if children_done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] if isinstance(c, (dict, list)) else 1 for c in children)
            if sizes[id(node)] > MAX_NODES:
                raise ConfigError(
                    file, "", f"holds more than {MAX_NODES:,} values once YAML aliases (*name) are expanded; "
                    "a sweep file needs a few hundred (is it an alias bomb?)",
                )
            continue
        if id(node) in sizes:
            continue
        if id(node) in entered:
            raise ConfigError(file, "", "a YAML alias (*name) refers to a value that contains it; that never ends")
        entered.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)


# --------------------------------------------------------------------------------------------
# ${VAR} in path fields
# --------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand_paths(file: str | Path, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`${VAR}` from the environment in path-typed values only (storage_path, the dataset's folder options and
    FID's files: data roots differ per machine); elsewhere it stays literal text. Returns the expanded copy and
    {dotted key: the text as written} for each value that was expanded."""
    data = dict(data)
    holders: list[tuple[str, dict[str, Any], str]] = [("storage_path", data, "storage_path")]
    dataset = data.get("dataset")
    name = dataset.get("name") if isinstance(dataset, dict) else None
    if isinstance(name, str) and name in DATASET_SPECS:
        data["dataset"] = dataset = dict(dataset)  # type: ignore[arg-type]
        holders += [(f"dataset.{opt}", dataset, opt) for opt in DATASET_SPECS[name].path_options]
    written_as: dict[str, str] = {}

    def expand(key: str, holder: dict[str, Any], field: str) -> None:
        text = holder.get(field)
        if isinstance(text, str) and "$" in text:
            holder[field] = _expand_vars(file, key, text)
            written_as[key] = text

    for key, holder, field in holders:
        expand(key, holder, field)
    for key in FID_PATH_KEYS:  # one at a time: finding a key copies the mappings on its way, which the next one may share
        found = _holder(data, key)
        if found is not None:
            expand(key, *found)
    return data, written_as


def _holder(data: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str] | None:
    """The mapping holding `dotted`'s last key (each mapping on the way copied, so that the caller's data is
    left as it was) and that key; None where the file has no such mapping."""
    *parents, leaf = dotted.split(".")
    holder = data
    for name in parents:
        child = holder.get(name)
        if not isinstance(child, dict):
            return None
        holder[name] = holder = dict(child)
    return holder, leaf


def _expand_vars(file: str | Path, key: str, text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(file, key, f"'${{{name}}}' in '{text}' is not an environment variable name")
        if name not in os.environ:
            raise ConfigError(file, key, f"environment variable {name} is not set (used in '{text}')")
        return os.environ[name]

    expanded = _VAR.sub(value, text)
    if "${" in _VAR.sub("", text):
        raise ConfigError(file, key, f"'${{' without a closing '}}' in '{text}'")
    return expanded
