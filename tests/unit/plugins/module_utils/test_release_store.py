"""The release record file: read, and changed under its lock (written on a clean exit only)."""
import json

import pytest

from ansible_collections.greenflow.platform.plugins.module_utils import _release_record as rr
from ansible_collections.greenflow.platform.plugins.module_utils import _release_store as store
from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import AtomicFileError, FileLock, lock_path_for


def _begin(record, version="1"):
    return rr.begin(record, "deploy", {"version": version, "color": "blue"}, 1.0, 7200)


def test_a_clean_block_writes_the_record(tmp_path):
    path = str(tmp_path / "releases" / "demo.json")
    with store.RecordUpdate(path, "demo") as update:
        _begin(update.record)
    assert [e["version"] for e in store.read(path, "demo")["releases"]] == ["1"]


def test_a_block_that_raises_writes_nothing(tmp_path):
    path = tmp_path / "demo.json"
    path.write_text(json.dumps({"schema": 1, "app": "demo", "releases": []}))
    before = path.read_text()
    with pytest.raises(rr.ReleaseRecordError):
        with store.RecordUpdate(str(path), "demo") as update:
            _begin(update.record)
            rr.finish(update.record, 99, "failed", {})
    assert path.read_text() == before


def test_dry_run_writes_nothing_and_takes_no_lock(tmp_path):
    path = tmp_path / "demo.json"
    with store.RecordUpdate(str(path), "demo", dry_run=True) as update:
        _begin(update.record)
    assert not path.exists() and not (tmp_path / ".demo.json.lock").exists()


def test_the_lock_is_held_for_the_whole_block(tmp_path):
    path = str(tmp_path / "demo.json")
    with store.RecordUpdate(path, "demo"):
        with pytest.raises(AtomicFileError):
            FileLock(lock_path_for(path), timeout=0.2).acquire()
    FileLock(lock_path_for(path), timeout=0.2).acquire().release()   # free again afterwards


def test_an_unreadable_record_is_never_overwritten(tmp_path):
    path = tmp_path / "demo.json"
    path.write_text("{not json")
    with pytest.raises(rr.ReleaseRecordError):
        with store.RecordUpdate(str(path), "demo"):
            pass
    assert path.read_text() == "{not json"
    FileLock(lock_path_for(str(path)), timeout=0.2).acquire().release()


def test_write_inside_the_block_then_the_final_write(tmp_path):
    path = str(tmp_path / "demo.json")
    with store.RecordUpdate(path, "demo") as update:
        entry = _begin(update.record)
        update.write()   # the lock is on disk before a long step
        assert store.read(path, "demo")["releases"][0]["outcome"] == "in_progress"
        with pytest.raises(AtomicFileError):
            FileLock(lock_path_for(path), timeout=0.2).acquire()
        rr.finish(update.record, entry["id"], "succeeded", {})
    assert store.read(path, "demo")["releases"][0]["outcome"] == "succeeded"
