"""The tuning database survives a kill: a torn last line is skipped (and said), cut off before the next append,
and what was complete before it is all still there."""

import shutil
from pathlib import Path

import pytest

from kdcompile.tvm_layer.records import RECORDS, TuningRecordFiles, count_records, load_database

pytestmark = pytest.mark.slow
DB = Path(__file__).parent / "data" / "mean_rfactor_db"


def test_a_torn_record_line_is_skipped_then_cut_off(tmp_path):
    work = tmp_path / "db"
    shutil.copytree(DB, work)
    complete = count_records(work)
    lines = (work / RECORDS).read_text().splitlines(keepends=True)
    with (work / RECORDS).open("a") as f:
        f.write(lines[0][: len(lines[0]) // 2])  # a kill in the middle of writing a record
    assert count_records(work) == complete  # it used to be counted as a trial...
    assert len(load_database(work).get_all_tuning_records()) == complete  # ...and to make every tune fail here
    db = TuningRecordFiles(work)
    record = db.get_all_tuning_records()[0]
    db.commit_tuning_record(record)  # the next append cuts the torn line off first
    assert (work / RECORDS).read_text().endswith("\n")
    assert count_records(work) == complete + 1
    assert len(load_database(work).get_all_tuning_records()) == complete + 1
