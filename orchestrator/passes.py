"""The ledger of a sweep's passes (`passes.json` on its storage): each `fmx sweep` of an edited file runs the
work it still needs as one Ray Tune experiment of its own (a pass).

A pass is `ended` once its driver got through to the end uninterrupted. A sweep whose last pass did not end
is continued with `--resume` (of the same file) before anything new runs: a new pass over what it left, each
training from its own last checkpoint (orchestrator.resume_points), Tune's state of it never restored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.cell_store import PASSES_FILE, read_json, write_json
from orchestrator.safe_files import DamagedFile
from orchestrator.folders import join
from orchestrator.pass_work import WorkItem

FIRST_PASS = "tune"  # the Tune experiment's folder under the storage; later passes are tune-2, tune-3, ...


@dataclass(frozen=True)
class PassEntry:
    name: str
    config_digest: str | None  # None: a sweep from before the ledger existed
    work: list[dict[str, Any]] | None  # WorkItem dicts; None: every training of the file (before the ledger)
    ended: bool

    def items(self) -> list[WorkItem] | None:
        return None if self.work is None else [WorkItem.from_dict(w) for w in self.work]


def _path(storage: str) -> str:
    return join(storage, PASSES_FILE)


def read_passes(storage: str, legacy_state: bool = False) -> list[PassEntry]:
    """The passes so far; `legacy_state`: Tune state exists in the first pass's folder without a ledger (a
    sweep started before it existed), read as one pass that did not end. A ledger that is there but not a
    list of passes raises `DamagedFile` naming it."""
    path = _path(storage)
    content = read_json(path)
    if content is None:
        return [PassEntry(FIRST_PASS, None, None, False)] if legacy_state else []
    try:
        if not isinstance(content, list) or not content:
            raise TypeError("not a list of passes")
        passes = [PassEntry(**entry) for entry in content]
        for entry in passes:
            if not isinstance(entry.name, str) or not isinstance(entry.ended, bool):
                raise TypeError("a pass without a name or an ended flag")
            entry.items()  # every work item readable
    except (TypeError, KeyError, ValueError, AttributeError) as err:
        raise DamagedFile(f"{path} is not a ledger of passes ({err})") from None
    return passes


def next_pass_name(passes: list[PassEntry]) -> str:
    return FIRST_PASS if not passes else f"{FIRST_PASS}-{len(passes) + 1}"


def write_passes(storage: str, passes: list[PassEntry]) -> None:
    write_json(_path(storage), [asdict(p) for p in passes])
