"""Loading a hostile checkpoint runs none of its code: torch.load(weights_only=True) refuses pickled
objects, both for training checkpoints and for the model the served pyfunc loads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint.io import load_checkpoint
from pipeline.errors import DataError

MARKER = Path("/tmp") / f"deunet-pwned-{os.getpid()}"


class Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {MARKER}",))


def test_pickled_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    MARKER.unlink(missing_ok=True)
    torch.save(
        {"model_name": "unet", "model_config": {}, "state_dict": {}, "payload": Exploit()},
        tmp_path / "evil.pt",
    )
    with pytest.raises(DataError, match=r"evil\.pt: cannot read checkpoint \(UnpicklingError"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not MARKER.exists()  # the embedded command did not run


def test_every_torch_load_in_the_code_is_weights_only() -> None:
    # Checkpoints reach the served pyfunc, evaluate and predict through load_checkpoint; any other
    # torch.load in the library must be weights_only=True as well.
    root = Path(__file__).resolve().parents[2]
    calls = []
    for path in [*(root / "pipeline").rglob("*.py"), *(root / "stages").rglob("*.py")]:
        text = path.read_text()
        start = 0
        while (i := text.find("torch.load(", start)) >= 0:
            call = text[i : text.find(")", i) + 1]
            calls.append((path.relative_to(root).as_posix(), call))
            start = i + 1
    assert calls, "load_checkpoint's torch.load should have been found"
    unsafe = [(path, call) for path, call in calls if "weights_only=True" not in call]
    assert not unsafe, unsafe
