"""Train the digit classifier whose features measure sample quality (dgm_run/sample_quality.py), and
write its weights into the package.

    python scripts/train_digit_classifier.py DIR            # DIR holds MNIST/raw; about a minute per epoch on 2 cores

It trains on MNIST's 60,000 training digits (grey levels; each batch also as a fresh binarization, so that
features of binary and of grey digits agree), Adam 1e-3, batch 128, `--epochs` epochs, seed 0, then prints
its test accuracy on the 10,000 test digits, grey and binarized. The weights are stored in float16.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import torch
from torch.nn import functional as F

from dgm_run.data.base import bernoulli
from dgm_run.data.mnist import read_split
from dgm_run.sample_quality import WEIGHTS, DigitClassifier

OUT = Path(str(resources.files("dgm_run.assets") / WEIGHTS))


def accuracy(net: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)]).eq(y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder holding MNIST/raw")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    raw = args.root / "MNIST" / "raw"
    x, y = read_split(raw, "train")
    x_test, y_test = read_split(raw, "test")
    x, x_test = (t.float().div(255) for t in (x, x_test))
    net = DigitClassifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            batch = x[order[i : i + 128]]
            inputs, targets = torch.cat([batch, bernoulli(batch)]), y[order[i : i + 128]].repeat(2)
            loss = F.cross_entropy(net(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        print(
            f"epoch {epoch + 1}: test accuracy {accuracy(net, x_test, y_test):.4f} grey, "
            f"{accuracy(net, bernoulli(x_test), y_test):.4f} binarized"
        )
        net.train()
    torch.save({k: v.half() for k, v in net.state_dict().items()}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
