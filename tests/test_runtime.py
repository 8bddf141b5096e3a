"""Where a run computes (nmt.core.runtime): the precision auto chooses, the allocator."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from nmt.core import runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("flags", "chosen"),
    [
        ({"avx2"}, torch.float32),
        ({"avx2", "amx_bf16"}, torch.bfloat16),
        ({"avx512_bf16"}, torch.bfloat16),
    ],
)
def test_auto_is_bf16_only_where_the_cpu_multiplies_it(monkeypatch, flags, chosen):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    assert runtime.pick_precision("auto", torch.device("cpu")) == chosen
    assert runtime.pick_precision("fp32", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="precision='fp16': expected one of auto, fp32, bf16"):
        runtime.pick_precision("fp16", torch.device("cpu"))


HUGE_PAGE_PROBE = """
import {first}, torch
x = torch.empty(10 << 20, dtype=torch.uint8).fill_(1)
address, flags = x.data_ptr(), ""
for line in open("/proc/self/smaps"):
    if "-" in line.split()[0] and ":" not in line.split()[0]:
        start, end = (int(v, 16) for v in line.split()[0].split("-"))
        inside = start <= address < end
    elif inside and line.startswith("VmFlags:"):
        flags = line
print("hg" in flags.split())
"""


@pytest.mark.parametrize(
    "first,setting,expected",
    [
        ("nmt", None, "True"),
        ("nmt", "0", "False"),
        ("sys", None, "False"),
    ],
)
def test_large_tensors_are_on_huge_pages_in_processes_that_import_nmt(first, setting, expected):
    """A 10 MiB tensor's mapping is advised onto huge pages (VmFlags "hg") in a process that
    imports nmt before torch, unless the environment says 0; without nmt torch does not ask."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    code = HUGE_PAGE_PROBE.format(first=first)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_operator_counter_counts_dtype_conversions_and_times_products():
    """Casts are dtype conversions only (autocast's among them), and the products' share of the
    block's time is a share."""
    import torch.nn.functional as F

    from nmt.core.runtime import OperatorCounter

    x, w = torch.randn(8, 16), torch.randn(32, 16, requires_grad=True)
    with OperatorCounter() as plain:
        F.linear(x, w).clone().to(torch.float32)  # same dtype: no conversion
    assert plain.casts == 0
    with OperatorCounter(timed=True) as mixed:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = F.linear(x, w)  # autocast casts the input and the weight
        y.float()
    assert mixed.casts == 3 and y.dtype == torch.bfloat16
    assert mixed.product_seconds > 0 and 0 < mixed.product_share <= 1
