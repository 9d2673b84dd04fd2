"""Files the tools write (reports, metrics, indexes, configs) are replaced whole or not at all."""
from __future__ import annotations

import json

import pytest

from pipeline.files import replaced_whole, write_json


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.5})
    with pytest.raises(RuntimeError), replaced_whole(target) as tmp:
        tmp.write_text('{"accur')
        raise RuntimeError("killed while writing")
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_json(tmp_path / "new" / "metrics.json", {"accuracy": 0.75})  # folders are made as needed
    assert json.loads((tmp_path / "new" / "metrics.json").read_text()) == {"accuracy": 0.75}
