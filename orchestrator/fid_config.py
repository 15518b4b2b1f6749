"""`eval.fid` of a sweep file: FID by the standard protocol (fm_core.fid), what it measures against and with.

    fid: {detector: PATH | URL, detector_sha256: HEX | null, samples: 50000, reference: {split: train} | {stats: PATH},
          batch_size: 200}

Validation (orchestrator.validation) pins the detector's path and records its sha256 here, so every trial
refuses a detector that is not the file validated; the evaluation key (orchestrator.cells) holds that sha256,
not the path, and leaves out batch_size, which does not change the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from fm_core.dataset_specs import IMAGE_SPLITS
from orchestrator.value_types import Batch

#: The sweep file's keys that hold a local path (or the detector's URL): `${VAR}` is expanded in them.
FID_PATH_KEYS = ("eval.fid.detector", "eval.fid.reference.stats")

if TYPE_CHECKING:
    Split = str
else:
    Split = Literal[IMAGE_SPLITS]


def _sha256_hex(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError("must be 64 hexadecimal digits (a sha256, as `sha256sum FILE` prints it) or null")
    return value.lower()


class FidReference(BaseModel):
    """What the samples' statistics are compared with: a split of the sweep's own dataset (computed once, cached
    on the sweep's storage) or a statistics file (`.npz` with `mu` and `sigma`, EDM's and clean-fid's format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    split: Split | None = None
    stats: str | None = Field(None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one_source(self) -> FidReference:
        if (self.split is None) == (self.stats is None):
            raise ValueError(f"give either split ({' | '.join(IMAGE_SPLITS)}) or stats (a .npz file with mu and sigma), not both")
        return self

    def content(self, written_as: dict[str, str]) -> dict[str, str]:
        """What the reference is, as the evaluation key holds it: the split, or the file as the sweep wrote it."""
        if self.split is not None:
            return {"split": self.split}
        return {"stats": written_as.get("eval.fid.reference.stats", str(self.stats))}


class FidConfig(BaseModel):
    """FID of every solver setting's samples: `samples` images drawn with the setting from their own fixed noise,
    against `reference`, with the TorchScript detector `detector` (inception-2015-12-05.pt for the standard
    numbers; docs/fid.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: str = Field(min_length=1, max_length=4096, description="a local file, or an http(s) URL downloaded once")
    detector_sha256: Annotated[str | None, BeforeValidator(_sha256_hex)] = Field(
        None, description="refuse a detector with another sha256; null: validation records the file's (a URL needs it)"
    )
    samples: Batch = Field(50_000, description="images drawn per solver setting (the standard: 50,000)")
    reference: FidReference = Field(default_factory=lambda: FidReference(split="train"))
    batch_size: Batch = Field(200, description="images per detector call (GPU memory); does not change the value")

    def content(self, written_as: dict[str, str]) -> dict[str, Any]:
        """What an FID value depends on (the evaluation key): the detector by its sha256, the sample count and
        the reference; not where the detector lies, nor how many images go through it at once."""
        return {"detector_sha256": self.detector_sha256, "samples": self.samples, "reference": self.reference.content(written_as)}
