"""Picking the local model's dtype: float32 on CPUs, and a warning where bfloat16 would be slow."""

from __future__ import annotations

import logging

import torch

from bpo_core.backends import loading as hf


def test_auto_is_float32_on_cpu():
    assert hf.resolve_dtype(None, "cpu") is torch.float32
    assert hf.resolve_dtype("auto", "cpu") is torch.float32


def test_bfloat16_on_a_cpu_without_amx_warns_and_with_amx_does_not(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="bpo_core")
    monkeypatch.setattr(hf, "cpu_has_amx", lambda: False)
    assert hf.resolve_dtype("bfloat16", "cpu") is torch.bfloat16  # the user's choice is kept
    assert "without AMX" in caplog.text
    caplog.clear()
    monkeypatch.setattr(hf, "cpu_has_amx", lambda: True)
    hf.resolve_dtype("bfloat16", "cpu")
    monkeypatch.setattr(hf, "cpu_has_amx", lambda: None)  # unknown (not Linux): no claim either way
    hf.resolve_dtype("bfloat16", "cpu")
    hf.resolve_dtype("float32", "cpu")
    assert caplog.text == ""
