"""Trains a linear classifier on scikit-learn's bundled digits data set, one epoch at a time.

Prints train loss/accuracy and test accuracy after every epoch (flushed, so the log streams
live) and logs them as run metrics through trainyard's tracking package, logs the test set's
confusion matrix as an image, then writes ./outputs/model.pkl (the fitted scaler +
classifier) and ./outputs/metrics.json. Needs only the standard library, numpy and
scikit-learn; the data ships inside scikit-learn, so nothing is downloaded. The `trainyard`
package is on PYTHONPATH in every run; outside one, Run.get_context() logs to a local folder.
"""

import argparse
import json
import os
import pickle
import struct
import sys
import time
import zlib

import numpy as np
import sklearn
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from trainyard import Run


def log(msg):
    print(msg, flush=True)


def confusion_png(cm, path, cell=24):
    """Writes the confusion matrix as a grey-scale heat map PNG (darker = more samples)."""
    n = len(cm)
    peak = max(int(v) for row in cm for v in row) or 1
    rows = []
    for i in range(n * cell):
        shades = bytes(255 - int(cm[i // cell][j // cell]) * 255 // peak for j in range(n * cell))
        rows.append(b"\x00" + shades)
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    size = n * cell
    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--learning-rate", type=float, default=0.01, help="constant SGD step size")
    p.add_argument("--batch-size", type=int, default=64, help="samples per partial_fit call")
    p.add_argument("--test-size", type=float, default=0.25, help="fraction held out for testing")
    p.add_argument("--seed", type=int, default=42, help="seed for the split and the shuffling")
    p.add_argument("--outputs", default="outputs", help="folder for model.pkl and metrics.json")
    args = p.parse_args()
    if args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.learning_rate <= 0:
        p.error("--learning-rate must be positive")
    return args


def main():
    args = parse_args()
    run = Run.get_context()
    run.tag("model", "sgd-logistic")
    run.log("learning_rate", args.learning_rate)
    started = time.time()
    run_id = os.environ.get("TRAINYARD_RUN_ID") or os.environ.get("AZUREML_RUN_ID") or "-"
    log(f"run {run_id}: python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}")

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=args.test_size, random_state=args.seed,
        stratify=digits.target)
    classes = np.unique(digits.target)
    log(f"digits: {len(x_train)} train / {len(x_test)} test samples, "
        f"{x_train.shape[1]} features, {len(classes)} classes")

    scaler = StandardScaler().fit(x_train)
    x_train_s = scaler.transform(x_train)
    x_test_s = scaler.transform(x_test)

    clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=args.learning_rate,
                        alpha=1e-4, random_state=args.seed)
    rng = np.random.default_rng(args.seed)
    history = []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(x_train_s))
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            clf.partial_fit(x_train_s[batch], y_train[batch], classes=classes)
        train_loss = log_loss(y_train, clf.predict_proba(x_train_s), labels=classes)
        train_acc = accuracy_score(y_train, clf.predict(x_train_s))
        test_acc = accuracy_score(y_test, clf.predict(x_test_s))
        history.append({"epoch": epoch, "train_loss": round(float(train_loss), 6),
                        "train_accuracy": round(float(train_acc), 6),
                        "test_accuracy": round(float(test_acc), 6)})
        run.log("train_loss", float(train_loss), step=epoch)
        run.log("train_accuracy", float(train_acc), step=epoch)
        run.log("test_accuracy", float(test_acc), step=epoch)
        log(f"epoch {epoch:3d}/{args.epochs}  train_loss {train_loss:.4f}  "
            f"train_acc {train_acc:.4f}  test_acc {test_acc:.4f}")

    os.makedirs(args.outputs, exist_ok=True)
    model = make_pipeline(scaler, clf)
    model_path = os.path.join(args.outputs, "model.pkl")
    with open(model_path, "wb") as f:
        pickle.dump(model, f)
    cm = confusion_matrix(y_test, clf.predict(x_test_s), labels=classes)
    cm_path = os.path.join(args.outputs, "confusion_matrix.png")
    confusion_png(cm.tolist(), cm_path)
    run.log_image("confusion_matrix", path=cm_path, description="test set, rows = true digit")
    final = history[-1]
    metrics = {
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "train_loss": final["train_loss"],
        "train_accuracy": final["train_accuracy"],
        "test_accuracy": final["test_accuracy"],
        "seconds": round(time.time() - started, 3),
        "history": history,
    }
    with open(os.path.join(args.outputs, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    log(f"saved {model_path} ({os.path.getsize(model_path)} bytes); "
        f"test accuracy {final['test_accuracy']:.4f} in {metrics['seconds']:.1f} s")


if __name__ == "__main__":
    main()
