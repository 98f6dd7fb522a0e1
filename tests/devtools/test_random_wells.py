"""The randomized wells `insa bench diagnose-eval` judges the engine on: deterministic per
seed, every fault and unusual operating point drawn, readable by `insa diagnose`, and
labelled so a score means something."""

from __future__ import annotations

from pathlib import Path

import orjson

from devtools.bench import random_wells
from shared.diagnosis.offline import read_file


def test_a_fleet_is_the_same_for_a_seed_and_another_for_another(tmp_path: Path) -> None:
    first = random_wells.generate(7, 40, 60, tmp_path / "a.jsonl")
    again = random_wells.generate(7, 40, 60, tmp_path / "b.jsonl")
    other = random_wells.generate(8, 40, 60, tmp_path / "c.jsonl")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert first[0].read_bytes() != other[0].read_bytes()


def test_labels_cover_every_fault_and_readings_parse_in_their_units(tmp_path: Path) -> None:
    data, labels_path, attributes_path = random_wells.generate(3, 60, 200,
                                                               tmp_path / "fleet.jsonl")
    labels = [orjson.loads(line) for line in labels_path.read_bytes().splitlines()]
    assert {lab["fault"] for lab in labels} == {*random_wells.FAULTS, None}
    for lab in labels:
        if lab["fault"] is not None:  # developed no sooner than it began, inside the run
            assert lab["onset"] <= lab["developed"]
    errors: list[str] = []
    readings = list(read_file(data, lambda n, e: errors.append(f"{n}: {e}")))
    assert errors == []
    seen = {r.device_id for r in readings}  # (a gap may cover a short run entirely)
    assert seen <= {lab["device_id"] for lab in labels} and len(seen) >= 0.9 * len(labels)
    # Readings sent in other units come back canonical: a PIP in kPa is psi again.
    in_kpa = next(lab for lab in labels if lab["well"]["units"].get("pip") == "kPa")
    pips = [r.values["pip"] for r in readings if r.device_id == in_kpa["device_id"]
            and "pip" in r.values]
    assert 100 < sorted(pips)[len(pips) // 2] < 2_500
    equipment = orjson.loads(attributes_path.read_bytes())
    assert equipment and all(set(d["attributes"]) == {"motor_rated_current", "vsd_min_hz",
                                                      "vsd_max_hz"}
                             for d in equipment.values())
