"""The appendix's list of measurement records (dscourse.records) against the data folder."""

import json

import pytest

from dscourse import package_path
from dscourse.records import RECORDS, RecordError, record, records

DATA = package_path("data")


def test_every_data_file_is_listed_once_and_every_listed_file_exists():
    listed = [entry[0] for entry in RECORDS]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in DATA.glob("*.json")}


def test_each_record_names_its_device_date_versions_and_a_command():
    for r in records():
        assert r["section"] in {"4.1", "4.2", "4.3", "4.4", "4.5", "4.6"}
        assert r["device"] and len(r["date"]) == 10 and "deepspeed 0.19.8" in r["versions"], r
        assert r["commands"] and all(c.split()[0] in {"python", "python3", "DSCOURSE_SCALE=gpu"} for c in r["commands"]), r


def test_a_missing_file_or_a_file_without_provenance_is_named(tmp_path):
    with pytest.raises(RecordError, match="gone.json: listed in dscourse.records.RECORDS but not in"):
        record("gone.json", "4.1", "x", folder=tmp_path)
    (tmp_path / "bare.json").write_text(json.dumps({"runs": []}))
    with pytest.raises(RecordError, match="bare.json: no provenance"):
        record("bare.json", "4.1", "x", folder=tmp_path)


def test_commands_read_as_a_reader_would_type_them():
    from dscourse.records import reader_command

    assert reader_command("x --out /root/out/peak.jsonl --dir /tmp/ckpt --o $OUT/a.json") == \
        "x --out peak.jsonl --dir ckpt --o a.json"
    assert not any("/root/" in c or "/tmp/" in c or "$OUT" in c for r in records() for c in r["commands"])
