"""Stored numbers of every model, to show that a change of the code's layout changes no result.

For each case below (a model and the options whose code paths differ), the model is built through
`dgm_run.train.build`, its parameters are set to values drawn from each parameter's *name* (so the
weights do not depend on the order in which the modules are created), and the loss terms of every
phase, the evaluation's metrics, the class probabilities and samples are computed from fixed seeds
on one stored batch. `tests/data/model_references.pt` holds the batch and those numbers;
`tests/test_model_references.py` recomputes them and asks for bitwise equality.

A parameter that moves or is renamed is listed in RENAMED (new name: the name it had when the
references were written), so that it gets the same values. One thread, so that the order of the
sums inside the matrix products is the same whatever the machine's core count.

    python -m tests.model_references   # writes the references from the code as it is (only on purpose)
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import torch
from torch import Tensor

from dgm_run.composition import compose
from dgm_run.contract import Batch, Progress
from dgm_run.train import build

REFERENCES = Path(__file__).parent / "data" / "model_references.pt"
# New parameter name -> the name it had when the references were written.
RENAMED: dict[str, str] = {}
SMALL_VAE = ["model.hidden=[24,16]", "model.z_dim=4", "model.iw_samples=3"]
SMALL_SEMI = ["model.hidden=[24,16]", "model.z_dim=4", "model.iw_samples=2", "data.n_labels=20"]
SMALL_AUX = [*SMALL_SEMI, "model.a_dim=3", "model.eval_samples=3"]
CASES: dict[str, list[str]] = {
    "vae": ["model=vae", *SMALL_VAE],
    "vae_warmup_gaussian": ["model=vae", *SMALL_VAE, "model.kl_warmup_epochs=3", "model.likelihood=gaussian"],
    "beta_vae": ["model=beta_vae", *SMALL_VAE],
    "cvae": ["model=cvae", *SMALL_VAE],
    "avb": ["model=avb", "model.hidden=[24,16]", "model.z_dim=4", "model.iw_samples=3"],
    "avb_vae": ["model=avb_vae", "model.hidden=[24,16]", "model.z_dim=4", "model.iw_samples=3"],
    "ddgm": ["model=ddgm"],
    "m2": ["model=m2", *SMALL_SEMI],
    "m2_sums_analytic_warmup": [
        "model=m2",
        *SMALL_SEMI,
        "model.reduction=sums",
        "model.kl=analytic",
        "model.kl_warmup_epochs=2",
    ],
    "m2_gumbel_samples": ["model=m2", *SMALL_SEMI, "model.marginalize=gumbel", "model.samples=2"],
    "m2_gaussian_init": ["model=m2", *SMALL_SEMI, "model.likelihood=gaussian", "model.init=glorot"],
    "adgm": ["model=adgm", *SMALL_AUX],
    "adgm_authors": ["model=adgm", *SMALL_AUX, "model.samples=2", "model.mc_average=authors"],
    "adgm_2015_code": [
        "model=adgm",
        *SMALL_AUX,
        "model.p_a=standard",
        "model.train_q_a=false",
        "model.q_z_sees_a=false",
        "model.kl=analytic",
        "model.init=glorot_all",
    ],
    "adgm_batch_norm_sums": ["model=adgm", *SMALL_AUX, "model.batch_norm=true", "model.reduction=sums"],
    "sdgm": ["model=sdgm", *SMALL_AUX],
    "sdgm_authors_analytic": [
        "model=sdgm",
        *SMALL_AUX,
        "model.samples=2",
        "model.mc_average=authors_sdgm",
        "model.kl=analytic",
    ],
    "m1m2": ["model=m1m2", *SMALL_SEMI, "model.m1_hidden=[24]", "model.m1_z_dim=6", "model.m1_prune_threshold=0.01"],
    "m1m2_once_binarize": [
        "model=m1m2",
        *SMALL_SEMI,
        "model.m1_hidden=[24]",
        "model.m1_z_dim=6",
        "model.m1_features=once",
        "model.m1_binarize=true",
        "data.binarize=false",
        "model.m1_prune_threshold=0.01",
    ],
}
# Images are stored as bytes (grey levels k / 255 and binarized 0 / 1 both come back exactly); outputs larger
# than this many values as a digest of their bytes.
STORED_VALUES = 64
COMMON = ["trainer.batch_size=8", "data.labelled_batch_size=4", "logger.tensorboard=false", "device=cpu"]


def named_value(name: str, like: Tensor) -> Tensor:
    """Values for the parameter called `name`, drawn from a generator seeded by the name: N(0, 0.3²)."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return (0.3 * torch.randn(like.shape, generator=generator, dtype=torch.float64)).to(like.dtype)


def outputs(case: str, tmp: Path, batch: dict[str, Tensor] | None = None) -> tuple[dict[str, Tensor], dict]:
    """The case's numbers, and the batch they were computed on (the stored `batch`, or one drawn from the data)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _outputs(case, tmp, batch)
    finally:
        torch.set_num_threads(threads)


def _outputs(case: str, tmp: Path, batch: dict[str, Tensor] | None) -> tuple[dict[str, Tensor], dict]:
    cfg = compose([*CASES[case], *COMMON])
    trainer = build(cfg, tmp / case)
    model, data = trainer.model, trainer.data
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(named_value(RENAMED.get(name, name), p))
    if batch is None:
        torch.manual_seed(0)
        drawn = data.batch(data.plan_epoch(), 0)
        batch = {k: getattr(drawn, k) for k in ("x", "x_labelled", "y_labelled", "index", "index_labelled")}
        batch["x_test"], batch["y_test"] = data.x_test[:6], data.y_test[:6]
        # Copies: a slice saved as it is would bring its whole data set into the file.
        batch = {k: v.clone() for k, v in batch.items() if v is not None}
    progress = Progress()
    progress.update(step=3, steps_per_epoch=2, total_steps=10)  # epoch 1.5: inside every warm-up
    train_batch = Batch(**{k: v for k, v in batch.items() if k not in ("x_test", "y_test")}, progress=progress)
    numbers: dict[str, Tensor] = {}
    for i, phase in enumerate(model.phases):
        torch.manual_seed(100 + i)
        terms = model.loss(phase, train_batch)
        numbers.update({f"loss/{phase}/{k}": v.detach() for k, v in terms.items()})
    model.eval()
    x_test, y_test = batch["x_test"], batch["y_test"]
    torch.manual_seed(7)
    numbers.update({f"eval/{k}": v for k, v in model.evaluate(x_test, y_test).items()})
    torch.manual_seed(8)
    predicted = model.predict(x_test)
    if predicted is not None:
        numbers["predict"] = predicted
    torch.manual_seed(9)
    samples = model.sample(4)
    if samples is not None:
        numbers["sample"] = samples
    torch.manual_seed(10)
    reconstructions = model.reconstruct(x_test)
    if reconstructions is not None:
        numbers["reconstruct"] = reconstructions
    return numbers, batch


def fingerprint(t: Tensor) -> Tensor | str:
    """A small tensor itself; a larger one as the SHA-256 of its bytes (equal digests: equal bits)."""
    t = t.detach().contiguous()
    return t.clone() if t.numel() <= STORED_VALUES else hashlib.sha256(t.numpy().tobytes()).hexdigest()


def images_to_bytes(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: (v * 255).round().to(torch.uint8) if v.is_floating_point() else v for k, v in batch.items()}


def images_from_bytes(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() / 255.0 if v.dtype == torch.uint8 else v for k, v in batch.items()}


def write(tmp: Path) -> None:
    """{"batches": {digest: batch}, "cases": {case: {"batch": digest, "numbers": ...}}}: cases on the same data
    share their batch."""
    batches, cases = {}, {}
    for case in CASES:
        numbers, batch = outputs(case, tmp)
        stored_batch = images_to_bytes(batch)
        assert torch.equal(images_from_bytes(stored_batch)["x"], batch["x"])
        key = hashlib.sha256(b"".join(v.numpy().tobytes() for v in stored_batch.values())).hexdigest()
        batches[key] = stored_batch
        cases[case] = {"batch": key, "numbers": {k: fingerprint(v) for k, v in numbers.items()}}
    REFERENCES.parent.mkdir(exist_ok=True)
    torch.save({"batches": batches, "cases": cases}, REFERENCES)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
    print(f"wrote {REFERENCES} ({REFERENCES.stat().st_size} bytes)")
