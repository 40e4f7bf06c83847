"""A softmax (multinomial logistic) classifier in numpy, for the digit scenarios.

Its whole learned state is one weight matrix (features plus a bias row, by classes) kept
in the blob store as ``.npy`` bytes; a state names it by digest. Training is full-batch
gradient descent from the current weights, so one call is one deterministic weight
update.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.ndimage import rotate, shift
from sklearn.datasets import load_digits

import guardrails as gr

from ..adapters.sklearn import array_from_npy, npy_bytes

N_PIXELS = 64


def with_bias(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64).reshape(-1, N_PIXELS)
    return np.hstack([X, np.ones((len(X), 1))])


def probabilities(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    logits = with_bias(X) @ W
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def predict(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    return (with_bias(X) @ W).argmax(axis=1)  # type: ignore[no-any-return]


def accuracy(W: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float((predict(W, X) == y).mean()) if len(y) else 0.0


def train(W: np.ndarray, X: np.ndarray, y: np.ndarray, *, lr: float, epochs: int,
          l2: float = 1e-3, classes: int = 10, rows: np.ndarray | None = None) -> np.ndarray:
    """``epochs`` steps of full-batch gradient descent on cross-entropy, from ``W`` (a copy is
    returned). ``rows`` (class indices) restricts the update to those columns of ``W``."""
    W = np.array(W, dtype=np.float64)
    Xb = with_bias(X)
    onehot = np.eye(classes)[np.asarray(y, dtype=int)]
    for _ in range(epochs):
        p = probabilities(W, X)
        grad = Xb.T @ (p - onehot) / len(Xb) + l2 * W
        if rows is not None:
            mask = np.zeros(classes, dtype=bool)
            mask[rows] = True
            grad[:, ~mask] = 0.0
        W -= lr * grad
    return W


def put_weights(blobs: gr.BlobStore, W: np.ndarray) -> dict[str, str]:
    return gr.blob_ref(blobs.put(npy_bytes(np.ascontiguousarray(W, dtype="<f8"))))


def get_weights(blobs: gr.BlobStore, ref: Any) -> np.ndarray:
    if not (isinstance(ref, dict) and set(ref) == {"$blob"}):
        raise ValueError(f"expected a blob reference for the weights, got {ref!r}")
    W = array_from_npy(blobs.get(ref["$blob"]))
    if W.ndim != 2 or W.shape[0] != N_PIXELS + 1:
        raise ValueError(f"weights blob has shape {W.shape}; expected ({N_PIXELS + 1}, classes)")
    return W


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (no download), grey levels scaled to [0, 1]."""
    data = load_digits()
    return data.data / 16.0, data.target


def transform(X: np.ndarray, *, angle: float = 0.0, dx: float = 0.0, dy: float = 0.0,
              invert: bool = False) -> np.ndarray:
    """Rotate (degrees), shift (pixels) and optionally invert a batch of 8x8 images."""
    out = []
    for x in np.asarray(X).reshape(-1, 8, 8):
        img = rotate(x, angle, reshape=False, order=1, mode="constant") if angle else x
        img = shift(img, (dy, dx), order=1, mode="constant") if (dx or dy) else img
        out.append(np.clip(img, 0.0, 1.0).ravel())
    result = np.array(out)
    return 1.0 - result if invert else result


def pixels(x: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in x]


class LabelIs(gr.Checker):
    """Passes when the classifier answered with this label."""

    name: ClassVar[str] = "label_is"
    label: int

    def __call__(self, output: Any) -> bool:
        return isinstance(output, dict) and output.get("label") == self.label


def label_cases(prefix: str, X: np.ndarray, y: np.ndarray, tags: tuple[str, ...] = ("capability",),
                hidden: bool = False) -> list[gr.CanaryCase]:
    """One canary case per labelled image: the answer must be the label."""
    return [gr.CanaryCase(id=f"{prefix}-{i:03d}", input=pixels(x), expect=LabelIs(label=int(t)),
                          tags=tags, hidden=hidden)
            for i, (x, t) in enumerate(zip(X, y, strict=True))]
