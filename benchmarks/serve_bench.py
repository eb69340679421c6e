"""Serving latency: a 30-frame, 10-slice cine through a real `mlflow models serve` of the champion.

    MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db .venv/bin/python -m benchmarks.serve_bench \
        [--model models:/deunet-cardiac@champion] [--size 128] [--requests 5]

Prints per-request wall times (HTTP included) and the in-process prediction time of the same cine.
Run `dvc repro` first so that a champion exists. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from pipeline.data.acdc import affine_from_spacing
from pipeline.data.image_bytes import encode_cine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="models:/deunet-cardiac@champion")
    p.add_argument("--size", type=int, default=128, help="in-plane size of the synthetic cine (voxels)")
    p.add_argument("--requests", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    cine = rng.normal(300, 50, (30, 10, args.size, args.size)).astype(np.float32)
    payload = base64.b64encode(encode_cine(cine, affine_from_spacing((8.0, 1.5, 1.5)))).decode()
    body = json.dumps({"dataframe_split": {"columns": ["nifti"], "data": [[payload]]}}).encode()
    print(f"cine (T, Z, Y, X) = {cine.shape}, request body {len(body) / 1e6:.1f} MB, cpus {os.cpu_count()}")

    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", args.model, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-t", "600"]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        start = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - start > 180:
                    raise SystemExit("server did not start") from None
                time.sleep(0.5)
        print(f"server ready after {time.perf_counter() - start:.1f} s")
        url = f"http://127.0.0.1:{port}/invocations"
        for i in range(args.requests):
            req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=600) as resp:
                out = json.loads(resp.read())
            print(
                f"request {i + 1}: {time.perf_counter() - t:.2f} s (status {out['predictions'][0]['status']})"
            )
    finally:
        server.terminate()
        server.wait(30)

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(args.model)
    import pandas as pd

    frame = pd.DataFrame({"nifti": [payload]})
    model.predict(frame)
    t = time.perf_counter()
    model.predict(frame)
    print(f"in-process predict (decode + segment + encode, no HTTP): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
