"""scikit-learn's 8x8 handwritten digits (1797 real samples, shipped with sklearn)."""
from __future__ import annotations

import torch

from lowbit.data.splits import Dataset, TensorSplit


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Stratified, seeded train/test split, normalised by the train set's mean and std."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        bunch.images, bunch.target, test_size=test_fraction, random_state=split_seed, stratify=bunch.target
    )
    x_tr = torch.tensor(x_tr, dtype=torch.float32).unsqueeze(1)
    x_te = torch.tensor(x_te, dtype=torch.float32).unsqueeze(1)
    mean, std = x_tr.mean(), x_tr.std()
    train = TensorSplit((x_tr - mean) / std, torch.tensor(y_tr, dtype=torch.int64))
    test = TensorSplit((x_te - mean) / std, torch.tensor(y_te, dtype=torch.int64))
    return Dataset("digits", train, test, 10, (1, 8, 8), [str(i) for i in range(10)])
