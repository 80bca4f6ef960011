"""A trial's states, written by the trial itself: whole files, the newest ones kept, and a
damaged newest one (a worker killed mid-write on a store without atomic renames, a copy cut
short, a full disk) costs one epoch, never the trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslsearch.trial import STATE_VERSION, StateStore, run_trial

from .test_trial import Recorder, _cfg


def test_the_store_keeps_the_newest_states_and_skips_a_damaged_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(str(tmp_path), keep=2, version=STATE_VERSION)
    assert store.load() is None
    for epoch in range(1, 5):
        store.save({"version": STATE_VERSION, "epoch": epoch})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state-00000003.pt", "state-00000004.pt"]
    assert StateStore(str(tmp_path), version=STATE_VERSION).load() == {
        "version": STATE_VERSION,
        "epoch": 4,
    }
    newest = tmp_path / "state-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:40])  # truncated
    again = StateStore(str(tmp_path), version=STATE_VERSION)
    with caplog.at_level("WARNING"):
        assert again.load() == {"version": STATE_VERSION, "epoch": 3}
    assert "not whole" in caplog.text
    # the next state is numbered after the damaged one, which the store then drops
    again.save({"version": STATE_VERSION, "epoch": 4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state-00000004.pt", "state-00000005.pt"]
    StateStore(str(tmp_path / "other"), version=1).save({"version": 1})
    assert StateStore(str(tmp_path / "other"), version=STATE_VERSION).load() is None
    assert not list(tmp_path.rglob("*.sslsearch-tmp"))  # no temporary file left


def test_a_trial_whose_newest_state_is_truncated_resumes_from_the_one_before(
    tmp_path: Path,
) -> None:
    full = run_trial(_cfg()).metrics
    rec = Recorder(tmp_path / "a", stop_after=5)  # 4 SSL epochs, 1 fine-tuning epoch
    with pytest.raises(KeyboardInterrupt):
        run_trial(_cfg(), rec, rec.store)
    states = sorted(rec.state_dir.glob("state-*.pt"))
    assert [p.name for p in states] == ["state-00000004.pt", "state-00000005.pt"]
    states[-1].write_bytes(states[-1].read_bytes()[: states[-1].stat().st_size // 3])
    rest = Recorder(tmp_path / "b")
    resumed = run_trial(_cfg(), rest, rec.store).metrics  # the store a restarted worker finds
    # the last SSL epoch's state was whole: fine-tuning ran again from its start
    assert [(m["phase"], m["epoch"]) for m in rest.metrics if not m["final"]] == [
        ("finetune", 1),
        ("finetune", 2),
    ]
    for k in ("top1", "top5", "flops", "params", "actual_ratio"):
        assert resumed[k] == pytest.approx(full[k]), k
