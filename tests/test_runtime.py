"""The processes' runtime settings (actors/runtime.py): the warnings every run printed and that say nothing about it
are quiet, others are not, and a caller's own settings win."""

from __future__ import annotations

import warnings


def test_the_zero_copy_warnings_are_quiet_and_others_are_not():
    """Ray's serializer warns at every zero-copy tensor it sends (its own "once" filter, added when it is imported,
    goes ahead of PYTHONWARNINGS), torch at every one it reads; an unrelated warning still shows."""
    import torch
    from ray._private.tensor_serialization_utils import zero_copy_tensors_reducer

    from actors.runtime import quiet_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        fn, args = zero_copy_tensors_reducer(torch.arange(4.0))
        received = fn(*args)
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert received.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert [str(w.message) for w in caught] == ["something else"], [str(w.message) for w in caught]


def test_actors_get_the_quiet_warnings_and_vllms_level_and_the_callers_own_win(monkeypatch):
    from actors.runtime import QUIET, actor_env

    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    env = actor_env(2, vllm=True)["env_vars"]
    entries = env["PYTHONWARNINGS"].split(",")
    assert entries == ["error::DeprecationWarning", *(f"ignore:{m}" for m in QUIET)]
    assert all("," not in m and ":" not in m for m in QUIET)  # one PYTHONWARNINGS entry each
    assert env["VLLM_LOGGING_LEVEL"] == "ERROR"
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    monkeypatch.setenv("PYTHONWARNINGS", env["PYTHONWARNINGS"])  # added once, not again
    again = actor_env(2, vllm=True)["env_vars"]
    assert again["VLLM_LOGGING_LEVEL"] == "INFO" and again["PYTHONWARNINGS"] == env["PYTHONWARNINGS"]
    assert "VLLM_LOGGING_LEVEL" not in actor_env(1)["env_vars"]
