"""No change of the code's layout changes a number: every model's loss terms, metrics, predictions, samples
and reconstructions equal, bit for bit, those stored in tests/data/model_references.pt (model_references.py
says how they were made and how a moved parameter keeps its values)."""

from __future__ import annotations

import pytest
import torch

from tests.model_references import CASES, REFERENCES, fingerprint, images_from_bytes, outputs

STORED = torch.load(REFERENCES, weights_only=True)


@pytest.mark.parametrize("case", CASES)
def test_numbers_equal_the_stored_references(case, tmp_path):
    reference = STORED["cases"][case]
    numbers, _ = outputs(case, tmp_path, images_from_bytes(STORED["batches"][reference["batch"]]))
    assert set(numbers) == set(reference["numbers"])
    differ = []
    for name, stored in reference["numbers"].items():
        now = fingerprint(numbers[name])
        same = now == stored if isinstance(stored, str) else isinstance(now, torch.Tensor) and torch.equal(now, stored)
        if not same:
            differ.append(name)
    assert not differ, f"{case}: {differ} differ from the stored references"
