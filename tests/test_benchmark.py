"""scripts/benchmark.py in its tiny CI setting: every model timed and counted, the reference path agreeing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

MODELS = ("vae", "m2", "m1m2", "adgm", "sdgm", "avb", "ddgm")


def test_tiny_benchmark_reports_every_model(tmp_path):
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--tiny", "--device", "cpu", "--json", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())

    assert report["tiny"] and report["device"] == "cpu"
    assert {"device_name", "threads", "torch", "python", "time"} <= set(report)  # dgm_run.report's header
    assert report["matmul"]["flop_per_s"] > 0
    assert set(report["models"]) == set(MODELS)
    for name, r in report["models"].items():
        assert r["samples_per_s"] > 0 and r["flops_per_step"] > 0, name
        assert r["flop_per_s"] > 0 and r["share_of_matmul"] > 0, name
        assert len(r["window_seconds_per_step"]) == report["windows"], name
        e = r["eval"]  # model.evaluate over the tiny test digits, in the trainer's batches
        assert e["digits"] == 40 and e["digits_per_s"] > 0 and e["flops_per_digit"] > 0, name
        assert e["share_of_matmul"] > 0 and len(e["pass_seconds"]) == 3, name
        assert done.stdout.count(f"| {name} |") >= 2  # a row in the training table and in the evaluation table
    semi = {r["samples_per_step"] for n, r in report["models"].items() if n in ("m2", "adgm", "sdgm")}
    assert semi == {40}  # 20 labelled + 20 unlabelled in the tiny setting

    for name in ("m2", "adgm", "sdgm"):
        r = report["models"][name]
        ref = r["reference"]
        # The straightforward step recomputes per label what the real step computes once per x...
        assert ref["flops_per_step"] > r["flops_per_step"], name
        assert 0 < r["flop_ratio"] < 1 and r["speed_ratio"] > 0, name
        # ...and, from the same parameters and the same noise, gives the same loss.
        assert ref["max_rel_diff"] < 1e-5 and ref["max_abs_diff"] < 1e-2, (name, ref)
    assert report["models"]["adgm"]["flop_ratio"] < 0.6


def test_m1m2_features_computed_once_take_m1s_pass_out_of_the_step(tmp_path):
    """The benchmark times M1+M2's M2 step; with the features computed once it does no M1 work per step."""
    flops = {}
    for features in ("once", "step"):
        out = tmp_path / f"{features}.json"
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "benchmark.py"),
                "--tiny",
                "--device",
                "cpu",
                "--models",
                "m1m2",
                "--set",
                f"model.m1_features={features}",
                "--json",
                str(out),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        r = json.loads(out.read_text())["models"]["m1m2"]
        assert r["seconds_per_epoch"] > 0 and "model.m1_epochs=0" in r["overrides"]
        flops[features] = r["flops_per_step"]
    # M1's encoder 784-32-32-16 over 40 digits, forward only: 2 * 40 * (784*32 + 32*32 + 32*16) FLOPs.
    assert flops["step"] - flops["once"] == 2 * 40 * (784 * 32 + 32 * 32 + 32 * 16)
