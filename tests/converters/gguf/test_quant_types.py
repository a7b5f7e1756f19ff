"""Quant names: llama.cpp's spelling both ways, file type <-> name."""

from __future__ import annotations

import pytest

from edgeglm.converters.gguf.quant_types import SCHEMES, quant_name, scheme
from edgeglm.errors import UsageError


@pytest.mark.parametrize("name", list(SCHEMES))
def test_a_file_type_names_its_scheme(name: str) -> None:
    assert quant_name(int(SCHEMES[name].ftype)) == name


def test_unknown_or_missing_file_types_have_no_name() -> None:
    assert quant_name(None) is None
    assert quant_name(9999) is None


def test_short_names_and_case_are_accepted_and_typos_listed() -> None:
    assert scheme("q4_k").name == "Q4_K_M"
    with pytest.raises(UsageError, match="Q4_K_M"):
        scheme("Q4_K_X")
