"""How the label y reaches the networks of M2, ADGM and SDGM without repeating work per label.

A per-label computation runs on rows: one row per (example, label) pair it needs. `Labels`
says which pairs, and `LabelledInput` is a first layer split by what its inputs depend on,

    W [e; r; onehot(y)] + b  =  (W_e e + b)  +  W_r r  +  W_y[:, y]
                                 per example    per row   a column per label

so that summing a bound over every label computes W_e e once per example instead of once per
label: the same numbers as the concatenated layer, for a K-th of that part's work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from dgm_run.models.nn import PartsLinear


class Labels:
    """The label of each row, for a batch of examples in two parts.

    The first len(given) examples take their given labels, one row each. Each of the
    `every` examples after them takes every label: K rows, in label order (the exact sum
    over y). Or, with `soft`, each of the examples after them takes one row with a relaxed
    one-hot label (Gumbel-softmax). Labelled and unlabelled examples thereby share one pass
    through the networks, with larger matrix products than two passes.
    """

    def __init__(
        self, n_classes: int, given: Optional[Tensor] = None, every: int = 0, soft: Optional[Tensor] = None
    ) -> None:
        if every and soft is not None:
            raise ValueError("Labels: either every label or soft labels for the second part, not both")
        self.k, self.given, self.every, self.soft = n_classes, given, every, soft
        self.n_given = 0 if given is None else len(given)
        self.n_soft = 0 if soft is None else len(soft)
        self.n_single = self.n_given + self.n_soft  # examples with a single row each, first

    def rows(self, t: Tensor) -> Tensor:
        """A per-example tensor (examples, ...) laid out per row (rows, ...)."""
        if not self.every:
            return t
        head, tail = t.split([self.n_single, self.every])
        tail = tail.unsqueeze(1).expand(-1, self.k, *tail.shape[1:]).flatten(0, 1)
        return torch.cat([head, tail]) if self.n_single else tail

    def add_columns(self, h: Optional[Tensor], columns: Tensor) -> Tensor:
        """Per row: h of the row's example (None: 0) plus the row label's column of `columns` (K, H)."""
        h_given, h_soft, h_every = (None,) * 3 if h is None else h.split([self.n_given, self.n_soft, self.every])
        parts = []
        if self.n_given:
            parts.append(columns[self.given] if h is None else h_given + columns[self.given])
        if self.n_soft:
            soft = self.soft @ columns
            parts.append(soft if h is None else h_soft + soft)
        if self.every:
            parts.append(columns.repeat(self.every, 1) if h is None else (h_every.unsqueeze(1) + columns).flatten(0, 1))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def paired(self, fn: Callable[[Tensor, Tensor], Tensor], per_row: Tensor, per_example: Tensor) -> Tensor:
        """fn(per_row, per_example) for every row, (rows,), without copying per_example onto rows:
        for the every-label part it is broadcast over the label axis."""
        if not self.every:
            return fn(per_row, per_example)
        # split, not slicing: the backward of a slice builds a zero tensor of the whole input.
        m = self.n_single
        row_head, row_tail = per_row.split([m, self.every * self.k])
        example_head, example_tail = per_example.split([m, self.every])
        tail = fn(row_tail.view(self.every, self.k, *per_row.shape[1:]), example_tail.unsqueeze(1)).flatten(0, 1)
        return torch.cat([fn(row_head, example_head), tail]) if m else tail

    def split(self, per_row: Tensor) -> tuple[Tensor, Tensor]:
        """Per-row values as (the given-label examples', (n_given,); the others', (every, K) or (n_soft,))."""
        given, rest = per_row.split([self.n_given, len(per_row) - self.n_given])
        return given, rest.view(self.every, self.k) if self.every else rest


class LabelledInput(nn.Module):
    """First layer of a network on [per-example inputs, per-row inputs, onehot(y)]; see the module doc.

    `example_dims` and `row_dims` list the widths of the inputs of each kind (either may be empty).
    """

    def __init__(self, example_dims: Sequence[int], row_dims: Sequence[int], n_classes: int, out_dim: int) -> None:
        super().__init__()
        # The bias lives in the per-example part where there is one: added once per example.
        self.example = PartsLinear(example_dims, out_dim) if example_dims else None
        self.row = PartsLinear(row_dims, out_dim, bias=not example_dims) if row_dims else None
        self.y = nn.Linear(n_classes, out_dim, bias=False)

    @property
    def label_columns(self) -> Tensor:
        """W_y as rows per label, (K, out_dim)."""
        return self.y.weight.T

    def forward(self, labels: Labels, example: Sequence[Tensor] = (), row: Sequence[Tensor] = ()) -> Tensor:
        h = labels.add_columns(None if self.example is None else self.example(*example), self.label_columns)
        return h if self.row is None else h + self.row(*row)
