"""tools/gpu_session.sh refuses to run on a machine without a CUDA device."""

import os
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_gpu_session_script_refuses_without_a_gpu(tmp_path):
    r = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "gpu_session.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "no CUDA device" in r.stderr
