"""The machine a benchmark ran on, written into every result (figures differ by CPU kind)."""

from __future__ import annotations

import platform
from datetime import date
from pathlib import Path

import torch

from models.loading import cpu_bf16


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def describe() -> dict:
    """Date, CPU model, torch's CPU capability, native bf16 matmul, threads."""
    return {"date": date.today().isoformat(), "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16": cpu_bf16(),
            "threads": torch.get_num_threads()}
