"""docs/interfaces.md embeds the contract's generated tables; this fails when code and doc drift apart."""

from pathlib import Path

import pytest

from orelane.contract import reference

DOC = (Path(__file__).resolve().parents[2] / "docs" / "interfaces.md").read_text()


@pytest.mark.parametrize("table", reference.all_tables(), ids=lambda t: t.splitlines()[0][:40])
def test_interfaces_doc_contains_the_generated_table(table):
    assert table in DOC, "docs/interfaces.md is out of date: run python -m orelane.contract.reference"
