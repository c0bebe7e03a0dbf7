"""Loading a local model: dtype choice (float32 on CPUs, a warning where bfloat16 would be slow), missing folders."""

from __future__ import annotations

import logging

import torch

from bpo_core.backends import loading


def test_auto_is_float32_on_cpu():
    assert loading.resolve_dtype(None, "cpu") is torch.float32
    assert loading.resolve_dtype("auto", "cpu") is torch.float32


def test_bfloat16_on_a_cpu_without_amx_warns_and_with_amx_does_not(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="bpo_core")
    monkeypatch.setattr(loading, "cpu_has_amx", lambda: False)
    assert loading.resolve_dtype("bfloat16", "cpu") is torch.bfloat16  # the user's choice is kept
    assert "without AMX" in caplog.text
    caplog.clear()
    monkeypatch.setattr(loading, "cpu_has_amx", lambda: True)
    loading.resolve_dtype("bfloat16", "cpu")
    monkeypatch.setattr(loading, "cpu_has_amx", lambda: None)  # unknown (not Linux): no claim either way
    loading.resolve_dtype("bfloat16", "cpu")
    loading.resolve_dtype("float32", "cpu")
    assert caplog.text == ""


def test_a_missing_local_folder_says_so_at_once(tmp_path):
    import pytest

    from bpo_core.errors import ModelLoadError

    for path in (str(tmp_path / "nope"), "./no-such-model", "~/no-such-model"):
        with pytest.raises(ModelLoadError, match="no such folder"):
            loading.ensure_reachable(path)
