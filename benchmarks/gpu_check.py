"""GPU check (issue 15): correctness, speed and real accuracy on one CUDA GPU, in one prepared run.

    python -m benchmarks.gpu_check prepare          # here: .device/acdc-roi (31 MiB) + .device/site (nibabel)
    python -m benchmarks.gpu_check run --dry-run    # the CPU rehearsal at tiny sizes (seconds)
    PYTHONPATH=.device/site python3 -m benchmarks.gpu_check run --out $OUT    # on the GPU machine

The GPU machine gets the working tree and the carried ``.device`` folder only (see
benchmarks.gpu_bundle): the data are the compact bundle, and nibabel, which that machine's Python lacks,
travels in ``.device/site``. The whole run keeps to ``--budget-s`` (330 s by default, counted from the
process's start) so that it ends within 6 minutes and a second call fits in the lease.

Sections, in this order; each is wrapped (a failure is recorded with its traceback and the run goes on),
and ``gpu_check.json`` and ``gpu_check.md`` in ``--out`` are rewritten after every section and every
model, so a killed run still leaves what it measured:

1. ``deform_conv``: torchvision's ``deform_conv2d`` against the project's grid_sample path on the same
   inputs, forward and backward (TDAM- and DGPA-like shapes), within tolerances; and their speed.
2. ``train_step``: one bf16-autocast training step of each of the eight models at 256 x 256, base 32:
   loss, gradients and updated weights finite.
3. ``cpu_vs_cuda``: a small DeU-Net trained for a few epochs on acdc-roi fold 0 (96 px) here, then the
   CPU (fp32) and CUDA (bf16 and fp32) predictions of that checkpoint on the whole cine of an unseen
   patient: Dice >= 0.99 per structure between them.
4. ``speed_inference``: a 30 x 10 x 256 x 256 cine through ``Segmenter.predict`` (preprocessing
   included) for U-Net and DeU-Net: fp32, bf16, bf16 + channels_last, and torch.compile where the
   budget allows (in a child process with a time limit); DeU-Net / U-Net ratios; the goal <= 0.3 s.
5. ``speed_training``: training clips/s and peak memory of every model at 256 x 256, batch 12 and 32.
6. ``accuracy``: DeU-Net and U-Net on acdc-roi fold 0 at 256 px, base 32 (the ``acdc-roi-gpu`` profile
   otherwise), each given the same share of the time left under ``--budget-s``: epochs planned from the
   measured throughput, training stopped cleanly between epochs at the deadline; then 3D Dice, HD and
   ASSD per structure and phase on the fold's validation patients (TTA none and dihedral, raw / lcc /
   lcc_fill).

``--dry-run`` runs every section on the CPU at tiny sizes (32 px, base 4, one epoch; torch.compile with
the "eager" backend), on a phantom bundle when no real one exists: the test suite runs it end to end.
``--sections`` runs a subset, e.g. a second call for torch.compile alone:
``run --sections speed_inference --compile-limit-s 120``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks import gpu_bundle
from benchmarks.gpu_report import render_markdown
from benchmarks.gpu_sections import RUNNERS, error_summary

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "acdc-roi-gpu.yaml"
SECTIONS = tuple(RUNNERS)  # deform_conv, train_step, cpu_vs_cuda, speed_inference, speed_training, accuracy


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU dry run."""

    size: int = 256
    model_args: dict[str, int] = field(default_factory=lambda: {"base_channels": 32, "depth": 4})
    # (batch, channels in, height, width, channels out, offset groups, modulated)
    deform_cases: tuple[tuple[int, int, int, int, int, int, bool], ...] = (
        (8, 3, 256, 256, 32, 3, False),  # TDAM: one offset group per frame
        (8, 3, 256, 256, 32, 3, True),  # TDAM, modulated (DCNv2)
        (8, 64, 128, 128, 64, 1, False),  # a DGPA encoder layer
    )
    deform_bench_shape: str = "12x96x128x128"
    check_size: int = 96
    check_model_args: dict[str, int] = field(default_factory=lambda: {"base_channels": 8, "depth": 4})
    check_epochs: int = 6
    cine_frames: int = 30
    cine_slices: int = 10
    infer_batch: int = 32
    repeats: int = 3
    warmup: int = 1
    train_batches: tuple[int, ...] = (12, 32)
    train_steps: int = 5
    epochs: int | None = None  # None: as many as the clock allows
    eval_tta: str = "dihedral"
    eval_reserve_s: float = 25.0  # per model, for evaluation after training
    workers: int = 8  # processes for materialise / preprocess; DataLoader workers in training
    compile_models: tuple[str, ...] = ("deunet", "unet")  # DeU-Net first: the model with the goal
    compile_backend: str = "inductor"


DRY = Sizes(
    size=32,
    model_args={"base_channels": 4, "depth": 2},
    deform_cases=((2, 3, 16, 16, 4, 3, False), (2, 3, 16, 16, 4, 3, True), (2, 8, 12, 12, 8, 1, False)),
    deform_bench_shape="2x8x16x16",
    check_size=32,
    check_model_args={"base_channels": 4, "depth": 2},
    check_epochs=1,
    cine_frames=4,
    cine_slices=2,
    infer_batch=4,
    repeats=1,
    warmup=0,
    train_batches=(2, 4),
    train_steps=1,
    epochs=1,
    eval_tta="flips",
    eval_reserve_s=0.0,
    workers=0,
    compile_models=("unet",),
    compile_backend="eager",  # the child-process path without Inductor's minute of compilation
)


class Context:
    """What the sections share: options, device, clock, work folder, data made once, the report."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, device: torch.device, out: Path,
                 work: Path, bundle: Path) -> None:  # fmt: skip
        self.args, self.sizes, self.device = args, sizes, device
        self.out, self.work, self.bundle = out, work, bundle
        # from the command line the budget counts from the process's start: imports are part of the run
        self.start = time.monotonic() - (_process_age() if args.from_cli else 0.0)
        self.deadline = self.start + args.budget_s
        self.cuda = device.type == "cuda"
        self.throughput: dict[tuple[str, int], float] = {}  # (model, batch) -> training clips/s
        self.data: dict[str, Any] = {}
        self.selected: list[str] = list(args.sections or SECTIONS)
        self._raw: Path | None = None
        self._stores: dict[int, Path] = {}

    def left(self) -> float:
        """Seconds left of ``--budget-s``."""
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def save(self) -> None:
        """Rewrite the JSON and the markdown (after every section and every model)."""
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=1, default=_jsonable) + "\n"),
                           ("gpu_check.md", render_markdown(self.data))):  # fmt: skip
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def params(self) -> dict[str, Any]:
        return profile_params()

    def raw_root(self) -> Path:
        """The bundle written back as ACDC-layout folders (once per run)."""
        if self._raw is None:
            raw = self.work / "raw"
            gpu_bundle.materialise(self.bundle, raw, self.sizes.workers)
            self._raw = raw
        return self._raw

    def store(self, size: int) -> tuple[Path, dict[str, Any]]:
        """The clip store at ``size`` px (r <= 1) and fold 0 of the pipeline's split of it."""
        from benchmarks.acdc_cv import split_for
        from pipeline.config import section
        from pipeline.preprocessing.patient import PreprocessConfig
        from pipeline.preprocessing.run import preprocess_dataset
        from pipeline.splitting.folds import read_split

        params = self.params()
        if size not in self._stores:
            pre = {**params["preprocess"], "size": size, "radius": 1, "max_radius": gpu_bundle.KEEP_RADIUS,
                   "workers": max(self.sizes.workers, 1)}  # fmt: skip
            cfg = section({"preprocess": pre}, "preprocess", PreprocessConfig)
            self._stores[size] = preprocess_dataset(
                self.raw_root(), self.work / f"store-{size}", cfg, progress=False
            )
        store = self._stores[size]
        return store, read_split(split_for(store, params))["folds"][0]

    def train_config(self, **overrides: Any) -> Any:
        """The profile's ``train`` section with ``overrides`` (a TrainConfig)."""
        from pipeline.config import section
        from pipeline.training.trainer import TrainConfig

        train = {**self.params()["train"], "folds": [0], "device": self.device.type, "threads": 0,
                 "num_workers": self.sizes.workers, "resume": False, **overrides}  # fmt: skip
        return section({"train": train}, "train", TrainConfig)


def profile_params() -> dict[str, Any]:
    """params.yaml with the acdc-roi-gpu profile over it (the paper's width and the GPU schedule)."""
    from benchmarks.acdc_cv import merged_params

    return merged_params(PROFILE, [])


def _process_age() -> float:
    """Seconds since this process started (0 where psutil cannot tell)."""
    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except Exception:
        return 0.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def run_sections(ctx: Context, names: list[str]) -> None:
    """Run ``names`` in SECTIONS order, each wrapped; the report is rewritten after each."""
    for name in SECTIONS:
        entry = ctx.data["sections"][name]
        if name not in names:
            continue
        entry.update(status="running", started_at_s=round(ctx.elapsed(), 1), result={})
        ctx.save()
        start = time.perf_counter()
        try:
            entry["status"] = RUNNERS[name](ctx, entry["result"])
        except Exception as exc:
            entry["status"], entry["error"] = "error", error_summary(exc)
        entry["seconds"] = round(time.perf_counter() - start, 2)
        print(f"gpu_check: {name}: {entry['status']} in {entry['seconds']:.1f} s "
              f"({ctx.left():.0f} s of the budget left)", flush=True)  # fmt: skip
        ctx.save()


def _meta(args: argparse.Namespace, device: torch.device, bundle: Path) -> dict[str, Any]:
    import torchvision

    meta: dict[str, Any] = {
        "command": " ".join(["python", "-m", "benchmarks.gpu_check", *args.argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "budget_s": args.budget_s,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    info = json.loads((bundle / "bundle.json").read_text())
    meta["bundle"] = {k: info[k] for k in ("source", "frames_kept", "frames_total", "bytes", "check_patient")}
    meta["bundle"]["patients"] = len(info["patients"])
    return meta


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device != "auto" else ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; use --dry-run for the CPU rehearsal")
    sizes = DRY if args.dry_run else Sizes()
    if args.no_compile:
        sizes = replace(sizes, compile_models=())
    if args.workers is not None:
        sizes = replace(sizes, workers=args.workers)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = Path(args.bundle)
    if not (bundle / "bundle.json").is_file():
        if not args.dry_run:
            raise SystemExit(
                f"error: no bundle at {bundle}; run `python -m benchmarks.gpu_check prepare` first"
            )
        bundle = work / "phantom-bundle"
        gpu_bundle.synthetic_bundle(bundle, dict(profile_params()["split"]))
    out = Path(args.out)
    ctx = Context(args, sizes, device, out, work, bundle)
    status = {n: "pending" if n in ctx.selected else "skipped: not selected" for n in SECTIONS}
    ctx.data = {
        "meta": _meta(args, device, bundle),
        "sections": {n: {"status": s} for n, s in status.items()},
    }
    ctx.save()
    run_sections(ctx, ctx.selected)
    print(f"gpu_check: done in {ctx.elapsed():.0f} s; {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


def prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    meta = gpu_bundle.prepare(Path(args.source).resolve(), Path(args.out), dict(profile_params()["split"]))
    gpu_bundle.copy_nibabel(Path(args.site))
    site_bytes = gpu_bundle.folder_bytes(Path(args.site))
    print(f"bundle: {len(meta['patients'])} patients, {meta['frames_kept']} of {meta['frames_total']} frames kept, "
          f"{meta['bytes'] / 2**20:.1f} MiB in {args.out}; nibabel {site_bytes / 2**20:.1f} MiB in {args.site}; "
          f"total {(meta['bytes'] + site_bytes) / 2**20:.1f} MiB (limit 64 MiB with the working tree); "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="write the compact acdc-roi bundle that travels to the GPU machine")
    pr.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "acdc-roi"))
    pr.add_argument("--out", default=str(ROOT / ".device" / "acdc-roi"))
    pr.add_argument("--site", default=str(ROOT / ".device" / "site"), help="where nibabel is copied")
    r = sub.add_parser("run", help="run the check (on a CUDA GPU; --dry-run: the CPU at tiny sizes)")
    r.add_argument("--out", default=str(ROOT / "data" / "bench" / "gpu_check"))
    r.add_argument("--bundle", default=str(ROOT / ".device" / "acdc-roi"))
    r.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    r.add_argument("--budget-s", type=float, default=330.0, help="wall-clock budget of the whole run")
    r.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes, one epoch; phantom data if no bundle"
    )
    r.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    r.add_argument("--sections", nargs="+", choices=SECTIONS, default=None, help="only these (in order)")
    r.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for writing and preprocessing the data, DataLoader workers (default 8; dry run 0)",
    )
    r.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    r.add_argument(
        "--compile-limit-s",
        type=float,
        default=60.0,
        help="most seconds one torch.compile measurement may take, compilation included",
    )
    args = p.parse_args(argv)
    args.argv, args.from_cli = list(sys.argv[1:] if argv is None else argv), argv is None
    return prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    sys.exit(main())
