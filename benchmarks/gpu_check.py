"""GPU check: correctness, speed, then the paper's Table 1 on real data, on one CUDA GPU in one prepared run.

    python -m benchmarks.gpu_check prepare          # here: .device/acdc-roi (31 MiB) + .device/site (nibabel)
    python -m benchmarks.gpu_check run --dry-run    # the CPU rehearsal at tiny sizes
    PYTHONPATH=.device/site python3 -m benchmarks.gpu_check run --out $OUT    # on the GPU machine
    PYTHONPATH=.device/site python3 -m benchmarks.gpu_check run --out $OUT --resume PREVIOUS/gpu_check.json

The GPU machine gets the working tree and the carried ``.device`` folder only (benchmarks.gpu_bundle): the
data are the compact bundle, and nibabel, which that machine's Python lacks, travels in ``.device/site``.
The run keeps to ``--budget-s`` (540 s by default, counted from the process's start). Sections, in order;
each is wrapped (a failure is recorded with its traceback and the run goes on), and ``gpu_check.json`` and
``gpu_check.md`` in ``--out`` are rewritten after every section and every model:

1. ``deform_conv``: torchvision's ``deform_conv2d`` against the project's grid_sample path, forward and
   backward (TDAM- and DGPA-like shapes). Offset gradients are compared away from integer sample
   coordinates (bilinear interpolation's kink, where the two take different one-sided derivatives), with
   the fraction out of tolerance over all and over the kept elements; both paths also pass a float64
   ``gradcheck`` at non-integer points. Plus their speed.
2. ``train_step``: one bf16-autocast training step of each of the eight models at 256 px: finite loss,
   gradients and weights.
3. ``speed_inference``: a 30 x 10 x 256 x 256 cine through ``Segmenter.predict`` for DeU-Net and U-Net, bf16
   (fp32 when time allows), against the goals (DeU-Net <= 0.3 s, U-Net <= 0.15 s); with ``--compile``,
   also DeU-Net under torch.compile in a child process with a time limit.
4. ``speed_training``: raw training clips/s (forward + backward + Adam, bf16, batch 32) of all eight models at
   96 px (what Table 1 is planned from) and of U-Net and DeU-Net at 256 px; the DeU-Net / U-Net ratios.
5. ``table1``: all eight models on acdc-roi fold 0 with the ``acdc-roi-gpu`` profile at 96 px, the same
   number of epochs each, planned from the 96-px throughputs so that training and evaluation fit the time
   left (stopped cleanly between epochs at a deadline, recorded); each evaluated on the GPU (3D Dice, HD,
   ASSD per structure and phase; raw and lcc_fill; TTA none and dihedral), its real training clips/s
   against the raw one, and its weights (fp16) written to ``--out``/weights when they fit.
6. ``cpu_vs_cuda``: the Table-1 DeU-Net fold-0 checkpoint on the whole cine of a validation patient: CUDA
   fp32 (TF32 off) against CPU fp32 strictly, and bf16 against a looser stated tolerance.
7. ``more_folds``: the time left trains folds 1-4 of the same split, DeU-Net and U-Net first, evaluated
   the same way; the report pools the folds per model.

``--resume PREVIOUS.json`` copies what an earlier run measured (sections that ended ok, evaluated
(model, fold) entries of Table 1, marked as resumed) and trains with its planned epochs, so a 5-fold
Table 1 fills in over several runs. ``--dry-run`` runs every section on the CPU at tiny sizes (32 px,
base 4, one epoch) on a phantom bundle when no real one exists: the test suite runs it end to end.
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
SECTIONS = tuple(RUNNERS)


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the CPU dry run (model_args: the profile's)."""

    size: int = 256  # train_step, speed_inference, speed_training's second size
    table_size: int = 96  # Table 1 and speed_training's first size: acdc-roi's native crop
    model_args: dict[str, Any] = field(default_factory=dict)
    # (batch, channels in, height, width, channels out, offset groups, modulated)
    deform_cases: tuple[tuple[int, int, int, int, int, int, bool], ...] = (
        (8, 3, 256, 256, 32, 3, False),  # TDAM: one offset group per frame
        (8, 3, 256, 256, 32, 3, True),  # TDAM, modulated (DCNv2)
        (8, 64, 128, 128, 64, 1, False),  # a DGPA encoder layer
    )
    deform_bench_shape: str = "12x96x128x128"
    cine_frames: int = 30
    cine_slices: int = 10
    infer_batch: int = 32
    repeats: int = 3
    warmup: int = 1
    train_batch: int = 32
    train_steps: int = 10
    epochs: int | None = None  # None: planned from the throughput and the clock
    eval_tta: str = "dihedral"
    workers: int = 8  # processes for materialise / preprocess; DataLoader workers in training
    extra_folds: tuple[int, ...] = (1, 2, 3, 4)
    extra_models: tuple[str, ...] | None = None  # None: all, DeU-Net and U-Net first


DRY = Sizes(
    size=32,
    table_size=32,
    model_args={"base_channels": 4, "depth": 2, "norm": "batch"},
    deform_cases=((2, 3, 16, 16, 4, 3, False), (2, 3, 16, 16, 4, 3, True), (2, 8, 12, 12, 8, 1, False)),
    deform_bench_shape="2x8x16x16",
    cine_frames=4,
    cine_slices=2,
    infer_batch=4,
    repeats=1,
    warmup=0,
    train_batch=4,
    train_steps=1,
    epochs=1,
    eval_tta="flips",
    workers=0,
    extra_folds=(1,),
    extra_models=("deunet", "unet"),
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
        self.throughput: dict[tuple[str, int], float] = {}  # (model, size) -> raw training clips/s
        self.checkpoints: dict[tuple[str, int], Path] = {}  # (model, fold) -> checkpoint of this run
        self.data: dict[str, Any] = {}
        self.previous: dict[str, Any] | None = None  # the --resume report
        self.selected: list[str] = list(args.sections or SECTIONS)
        self._raw: Path | None = None
        self._stores: dict[int, tuple[Path, list[dict[str, Any]]]] = {}

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

    def raw_root(self) -> Path:
        """The bundle written back as ACDC-layout folders (once per run)."""
        if self._raw is None:
            raw = self.work / "raw"
            gpu_bundle.materialise(self.bundle, raw, self.sizes.workers)
            self._raw = raw
        return self._raw

    def store(self, size: int) -> tuple[Path, list[dict[str, Any]]]:
        """The clip store at ``size`` px (r <= 1) and the folds of the pipeline's split of it."""
        from benchmarks.acdc_cv import split_for
        from pipeline.config import section
        from pipeline.preprocessing.config import PreprocessConfig
        from pipeline.preprocessing.run import preprocess_dataset
        from pipeline.splitting.folds import read_split

        if size not in self._stores:
            params = profile_params()
            pre = {**params["preprocess"], "size": size, "radius": 1, "max_radius": gpu_bundle.KEEP_RADIUS,
                   "workers": max(self.sizes.workers, 1)}  # fmt: skip
            cfg = section({"preprocess": pre}, "preprocess", PreprocessConfig)
            store = preprocess_dataset(self.raw_root(), self.work / f"store-{size}", cfg, progress=False)
            self._stores[size] = store, read_split(split_for(store, params))["folds"]
        return self._stores[size]

    def train_config(self, **overrides: Any) -> Any:
        """The profile's ``train`` section with ``overrides`` (a TrainConfig)."""
        from pipeline.config import section
        from pipeline.training.config import TrainConfig

        train = {**profile_params()["train"], "model_args": self.sizes.model_args, "folds": [0],
                 "device": self.device.type, "threads": 0, "num_workers": self.sizes.workers,
                 "resume": False, **overrides}  # fmt: skip
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


def run_sections(ctx: Context) -> None:
    """Run the selected sections in SECTIONS order, each wrapped; the report is rewritten after each.
    A section that ended ok in the ``--resume`` report is copied, not rerun (Table 1's sections always
    run: they skip the (model, fold) entries already evaluated)."""
    previous = (ctx.previous or {}).get("sections", {})
    for name in SECTIONS:
        if name not in ctx.selected:
            continue
        entry = ctx.data["sections"][name]
        old = previous.get(name, {})
        if old.get("status") == "ok" and name not in ("table1", "more_folds"):
            entry.update(old, resumed=ctx.args.resume)
            print(f"gpu_check: {name}: resumed (ok in {ctx.args.resume})", flush=True)
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
        "resumed_from": args.resume,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
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
    sizes = DRY if args.dry_run else Sizes(model_args=dict(profile_params()["train"]["model_args"]))
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
        if not (bundle / "bundle.json").is_file():
            gpu_bundle.synthetic_bundle(bundle, dict(profile_params()["split"]))
    ctx = Context(args, sizes, device, Path(args.out), work, bundle)
    resume_note = None
    if args.resume:
        previous = json.loads(Path(args.resume).read_text())
        if "table1" in previous and previous["meta"].get("dry_run") == args.dry_run:
            ctx.previous = previous
        else:
            resume_note = (
                "ignored: not a report of this version, or a dry run resumed by a real one (or back)"
            )
    status = {n: "pending" if n in ctx.selected else "skipped: not selected" for n in SECTIONS}
    ctx.data = {"meta": _meta(args, device, bundle), "sections": {n: {"status": s} for n, s in status.items()},
                "table1": {"plan": None, "entries": {}}, "weights": []}  # fmt: skip
    ctx.data["meta"]["resume_note"] = resume_note
    ctx.save()
    run_sections(ctx)
    print(
        f"gpu_check: done in {ctx.elapsed():.0f} s; {ctx.out / 'gpu_check.json'} and {ctx.out / 'gpu_check.md'}"
    )
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
    r.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole run")
    r.add_argument(
        "--dry-run", action="store_true", help="CPU, tiny sizes, one epoch; phantom data if no bundle"
    )
    r.add_argument(
        "--resume", default=None, metavar="PREVIOUS.json", help="skip what this earlier report measured"
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
    r.add_argument(
        "--compile", action="store_true", help="also time DeU-Net under torch.compile (child process)"
    )
    r.add_argument(
        "--compile-limit-s", type=float, default=60.0, help="most seconds the torch.compile row may take"
    )
    r.add_argument("--weights-max-files", type=int, default=6)
    r.add_argument("--weights-max-mib", type=float, default=16.0, help="largest weights file written")
    r.add_argument(
        "--weights-total-mib",
        type=float,
        default=58.0,
        help="all weights files together (the device tool returns 64 MiB at most, reports included)",
    )
    args = p.parse_args(argv)  # fmt: skip
    args.argv, args.from_cli = list(sys.argv[1:] if argv is None else argv), argv is None
    return prepare(args) if args.cmd == "prepare" else run(args)


if __name__ == "__main__":
    sys.exit(main())
