"""The sweep's own files beside Tune's, on its storage (a local folder, a mounted share or a cloud URI):
the weights a training had at each evaluation step (`cells/<cell>/step-<n>/`), from which later passes
evaluate new solver settings without retraining; each evaluation's sample plots and arrays
(`cells/<cell>/artifacts/<plots|samples>/`), kept until MLflow holds them, so a trial that dies while the
server is down loses none; and the ledger of the sweep's passes (`passes.json`).

Local paths and URIs go through pyarrow's filesystems, as Ray's own storage does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.folders import join
from orchestrator.safe_files import MAX_SMALL_FILE, DamagedFile, UnsafeFile, check_folder_files, read_small, refuse_links, refuse_special

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

CELLS_DIR = "cells"
ARTIFACTS_DIR = "artifacts"
PASSES_FILE = "passes.json"
#: Written last into a snapshot folder: a folder without it is incomplete (its upload was cut off).
COMPLETE_MARK = "record.json"


def cell_dir(storage: str, cell: str) -> str:
    """The folder of one training cell's evaluation snapshots."""
    return join(storage, CELLS_DIR, cell)


def step_dir(cell_folder: str, step: int) -> str:
    return join(cell_folder, f"step-{step}")


def artifacts_dir(cell_folder: str) -> str:
    """Where a cell's evaluation artifacts wait for MLflow: `<artifact_path>/<file>` below it."""
    return join(cell_folder, ARTIFACTS_DIR)


def _fs(path: str) -> tuple[FileSystem, str]:
    """pyarrow's filesystem for a local path or URI, and the path within it (pyarrow imported at first use)."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(path) if "://" in path else (fs.LocalFileSystem(), str(Path(path).absolute()))


def put_dir(local: Path, dest: str) -> None:
    """Copy a folder's files to `dest`, the completion mark last; a local copy is renamed into place whole."""
    if "://" not in dest:
        target = Path(dest)
        refuse_links(target)  # the old folder is deleted below: never through a link
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=target.parent))
        for file in local.iterdir():
            shutil.copyfile(file, tmp / file.name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return
    filesystem, root = _fs(dest)
    filesystem.create_dir(root, recursive=True)
    files = sorted(local.iterdir(), key=lambda f: f.name == COMPLETE_MARK)
    for file in files:
        with open(file, "rb") as src, filesystem.open_output_stream(f"{root}/{file.name}") as out:
            shutil.copyfileobj(src, out)


def has_complete(dest: str) -> bool:
    """Whether a snapshot folder exists with its completion mark."""
    filesystem, root = _fs(dest)
    from pyarrow import fs

    return filesystem.get_file_info(f"{root}/{COMPLETE_MARK}").type == fs.FileType.File


def get_dir(source: str, local: Path) -> Path:
    """Copy a stored folder's files into `local` (a local folder is read in place: no link, FIFO or device in it)."""
    if "://" not in source:
        check_folder_files(source)
        return Path(source)
    filesystem, root = _fs(source)
    from pyarrow import fs

    local.mkdir(parents=True, exist_ok=True)
    for info in filesystem.get_file_info(fs.FileSelector(root)):
        with filesystem.open_input_stream(info.path) as src, open(local / info.base_name, "wb") as out:
            shutil.copyfileobj(src, out)
    return local


def put_files(files: list[Path], dest: str) -> None:
    """Copy files into the folder `dest`, each whole: a local file is written beside and renamed into place."""
    if "://" not in dest:
        target = Path(dest)
        refuse_links(target)
        target.mkdir(parents=True, exist_ok=True)
        for file in files:
            tmp = target / f".incoming-{file.name}"
            shutil.copyfile(file, tmp)
            os.replace(tmp, target / file.name)
        return
    filesystem, root = _fs(dest)
    filesystem.create_dir(root, recursive=True)
    for file in files:
        with open(file, "rb") as src, filesystem.open_output_stream(f"{root}/{file.name}") as out:
            shutil.copyfileobj(src, out)


def list_files(folder: str) -> list[str]:
    """Every file below `folder` as a path relative to it ('/'-separated), sorted; [] where it is missing.
    Files still being written (`.incoming-*`) are left out."""
    from pyarrow import fs

    if "://" not in folder:
        return _local_files(Path(folder))
    filesystem, root = _fs(folder)
    if filesystem.get_file_info(root).type != fs.FileType.Directory:
        return []
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    names = [i.path[len(root.rstrip("/")) + 1 :] for i in found if i.type == fs.FileType.File]
    return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith(".incoming-"))


def _local_files(folder: Path) -> list[str]:
    """list_files of a local folder, walked without following links: a link in it is refused (UnsafeFile)."""
    refuse_links(folder)
    if not folder.is_dir():
        return []
    names: list[str] = []
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            refuse_special(Path(parent) / name)
        names += [str((Path(parent) / f).relative_to(folder)).replace(os.sep, "/") for f in files]
    return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith(".incoming-"))


def remove_dir(folder: str) -> None:
    """Delete a stored folder and what it holds (nothing happens where it is missing)."""
    from pyarrow import fs

    if "://" not in folder:
        refuse_links(folder)  # what a link points to is not the sweep's to delete
        if Path(folder).is_dir():
            shutil.rmtree(folder)
        return
    filesystem, root = _fs(folder)
    if filesystem.get_file_info(root).type == fs.FileType.Directory:
        filesystem.delete_dir(root)


def get_file(source: str, local: Path) -> Path:
    """A stored file as a local path (a local one in place; a URI's copied into the folder `local`)."""
    if "://" not in source:
        refuse_links(source)
        refuse_special(source)
        return Path(source)
    filesystem, root = _fs(source)
    local.mkdir(parents=True, exist_ok=True)
    target = local / root.rsplit("/", 1)[-1]
    with filesystem.open_input_stream(root) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    return target


def read_json(path: str) -> Any | None:
    """A JSON file on the storage, or None where it is missing; `DamagedFile` where it is there but unreadable
    (cut off by a full disk, edited by hand): reading it as missing would start the sweep over its state."""
    try:
        if "://" not in path:
            raw = read_small(path)
            return None if raw is None else json.loads(raw.decode())
        filesystem, root = _fs(path)
        from pyarrow import fs

        if filesystem.get_file_info(root).type == fs.FileType.NotFound:
            return None
        with filesystem.open_input_stream(root) as src:
            return json.loads(src.read(MAX_SMALL_FILE + 1).decode())
    except UnsafeFile:
        raise
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DamagedFile(f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None


def write_json(path: str, content: Any) -> None:
    """Write a JSON file on the storage; a local one atomically (a full disk leaves the old file)."""
    text = json.dumps(content, indent=1)
    if "://" not in path:
        target = Path(path)
        refuse_links(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    filesystem, root = _fs(path)
    with filesystem.open_output_stream(root) as out:
        out.write(text.encode())
