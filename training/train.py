"""Train mlayer's sample models and write model directories that MODEL_DIR can point at.

Two examples, both trained on data generated here (seeded, deterministic; nothing is
downloaded):

- ``text`` (default name ``sentiment``): the classic three-stage text pipeline saved as
  separate stages, ``PreProc1_<name>.joblib`` (CountVectorizer), ``PreProc2_<name>.joblib``
  (TfidfTransformer) and ``<name>.joblib`` (LogisticRegression), on generated product reviews.
- ``numeric`` (default name ``income``): one Pipeline (StandardScaler + LogisticRegression)
  on named numeric features of a generated census-like population.

Each directory also holds ``metadata.json``: stage order, input spec, label names, the
library versions the pickles were saved with, the creation time and example records.

Usage::

    python training/train.py --out models/sentiment
    python training/train.py --out models/income --example numeric --seed 7

The notebook ``training/notebooks/train_sample_models.ipynb`` holds the same code: its cells
are generated from the ``# %%`` sections of this file by ``training/make_notebook.py``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

# Libraries whose versions must match between training and the dependency layer:
# unpickling under other versions can fail or, worse, silently predict differently.
VERSIONED_PACKAGES = ("scikit-learn", "numpy", "scipy", "joblib")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# compress=0: the function unpickles these at every cold start, and uncompressed files load
# fastest (numpy arrays are read straight from the file, nothing to inflate).
JOBLIB_COMPRESS = 0

# %% Generated product reviews (the text example's data)
PRODUCTS = (
    "headphones", "blender", "phone case", "backpack", "coffee maker", "keyboard",
    "desk lamp", "charger", "water bottle", "vacuum", "office chair", "toaster",
    "monitor", "running shoes", "tent", "smart watch", "kettle", "mouse",
)  # fmt: skip
POSITIVE = (
    "works great", "love it", "excellent quality", "highly recommend", "very happy with it",
    "exceeded my expectations", "sturdy and well made", "fantastic value", "does exactly what it says",
    "five stars", "comfortable to use", "arrived quickly and works perfectly", "best purchase this year",
    "easy to set up", "great sound", "beautiful design", "reliable", "worth every penny",
    "my kids love it", "would buy again", "impressive battery life", "solid build",
)  # fmt: skip
NEGATIVE = (
    "broke after a day", "waste of money", "terrible quality", "does not work",
    "stopped working after a week", "very disappointed", "cheaply made", "returned it",
    "do not buy", "one star", "arrived damaged", "poor customer service", "flimsy",
    "battery died quickly", "not worth the price", "worst purchase ever", "fell apart",
    "useless", "overpriced junk", "instructions were wrong", "leaks everywhere", "too noisy",
)  # fmt: skip
NEUTRAL = (
    "I bought this for my office", "ordered the blue one", "it came in a box",
    "I have used it for a month", "got it as a gift", "the color is as pictured",
    "shipping took five days", "I use it every morning", "bought it on sale",
    "it replaced my old one", "my brother has the same model", "it is smaller than I thought",
    "comes with a cable", "I read the reviews first",
)  # fmt: skip
# "not bad" style phrases read negative word by word; bigrams let the model learn them.
NEGATED_POSITIVE = ("not great", "not as good as expected", "not reliable", "not happy")
NEGATED_NEGATIVE = ("not bad at all", "no complaints", "not disappointed", "no problems so far")
OPENERS = ("", "", "Update: ", "Honestly, ", "Overall ", "So far ", "Well, ")
TEXT_LABELS = ["negative", "positive"]


def make_reviews(n: int, seed: int) -> tuple[list[str], npt.NDArray[np.int64]]:
    """Generate ``n`` product reviews and their labels (1 = positive, 0 = negative).

    Reviews mix two or three sentiment phrases with neutral sentences; a fifth of them also
    carry one phrase of the opposite sentiment and 3% have their label flipped, so the task
    is learnable but not trivial.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    reviews = []
    for label in labels:
        same, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        negated = NEGATED_NEGATIVE if label else NEGATED_POSITIVE
        phrases = [str(p) for p in rng.choice(same, size=rng.integers(1, 3), replace=False)]
        if rng.random() < 0.3:
            phrases.append(str(rng.choice(negated)))
        if rng.random() < 0.2:
            phrases.append(str(rng.choice(other)))
        phrases += [str(p) for p in rng.choice(NEUTRAL, size=rng.integers(0, 3), replace=False)]
        order = rng.permutation(len(phrases))
        body = ". ".join(phrases[i] for i in order)
        product = str(rng.choice(PRODUCTS))
        opener = str(rng.choice(OPENERS))
        text = f"{opener}the {product}: {body}." if rng.random() < 0.5 else f"{opener}{body}."
        if rng.random() < 0.3:
            text = text.lower()
        reviews.append(text[0].upper() + text[1:])
    flip = rng.random(n) < 0.03
    return reviews, np.where(flip, 1 - labels, labels).astype(np.int64)


# %% Generated census-like population (the numeric example's data)
FEATURES = ["age", "education_num", "hours_per_week", "capital_gain", "capital_loss"]
INCOME_LABELS = ["<=50K", ">50K"]


def make_census(n: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.str_]]:
    """Generate ``n`` people (columns in ``FEATURES`` order) and their income class.

    The marginals follow the UCI Adult census data loosely (about a quarter earn >50K);
    income depends on age (peaking in mid-life), education, hours and capital gains/losses.
    """
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(39, 13, n), 17, 90).round()
    education = rng.choice(
        np.arange(1, 17),
        size=n,
        p=np.array([1, 2, 3, 4, 4, 6, 7, 3, 32, 22, 4, 3, 16, 5, 1, 1]) / 114,
    ).astype(np.float64)
    hours = np.clip(rng.normal(40, 12, n), 1, 99).round()
    gain = np.where(rng.random(n) < 0.08, np.exp(rng.normal(8.5, 1.0, n)), 0.0).round()
    gain = np.minimum(gain, 99999.0)
    loss = np.where(rng.random(n) < 0.05, np.clip(rng.normal(1900, 350, n), 150, 4356), 0.0)
    logit = (
        -20.2
        + 0.4 * age
        - 0.0042 * age**2
        + 0.66 * education
        + 0.07 * hours
        + 1.8 * np.log1p(gain) ** 0.5
        + 0.0012 * loss
    )
    rich = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    features = np.column_stack([age, education, hours, gain, loss.round()])
    labels = np.where(rich, INCOME_LABELS[1], INCOME_LABELS[0])
    return features, labels


# %% Metadata shared by both examples
@dataclass(frozen=True)
class Split:
    """Train / held-out split sizes: held-out data comes from the same generator."""

    train: int
    heldout: int


def library_versions() -> dict[str, str]:
    """The Python and library versions the pickles are saved with."""
    versions = {"python": platform.python_version()}
    versions.update({name: version(name) for name in VERSIONED_PACKAGES})
    return versions


def created_at() -> str:
    """ISO 8601 UTC timestamp; ``SOURCE_DATE_EPOCH`` pins it for reproducible output."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def prepare_out(out: Path) -> Path:
    """Create ``out``, clearing a model written there earlier; refuse any other content.

    A model directory is shipped whole (the model layer zips it), so stale stages or foreign
    files must not linger in it.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory: pass another --out")
    if out.is_dir() and any(out.iterdir()):
        metadata = out / "metadata.json"
        if not metadata.is_file():
            raise ValueError(
                f"{out} is not empty and holds no metadata.json: refusing to write a model "
                "into it; pass an empty or new directory as --out"
            )
        earlier = json.loads(metadata.read_text())
        for stage in earlier.get("stages", []):
            (out / Path(stage).name).unlink(missing_ok=True)
        metadata.unlink()
        if any(out.iterdir()):
            raise ValueError(
                f"{out} holds files other than an earlier model's: pass an empty or new "
                "directory as --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_model(
    out: Path,
    name: str,
    stages: list[tuple[str, Any]],
    input_spec: dict[str, Any],
    labels: list[str],
    examples: list[dict[str, Any]],
    training: dict[str, Any],
) -> Path:
    """Dump each stage with joblib (uncompressed) and write ``metadata.json``."""
    out = prepare_out(out)
    for filename, stage in stages:
        joblib.dump(stage, out / filename, compress=JOBLIB_COMPRESS)
    metadata = {
        "name": name,
        "stages": [filename for filename, _ in stages],
        "input": input_spec,
        "labels": labels,
        "versions": library_versions(),
        "created": created_at(),
        "examples": examples,
        "training": training,
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return out


def check_name(name: str) -> str:
    """Model names become file and layer names: letters, digits, '-' and '_' only."""
    if not NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


# %% Train the text model
TEXT_SPLIT = Split(train=4000, heldout=1000)


def train_text(out: Path, name: str = "sentiment", seed: int = 0) -> Path:
    """Train the three-stage sentiment model and write its model directory to ``out``."""
    check_name(name)
    texts, labels = make_reviews(TEXT_SPLIT.train + TEXT_SPLIT.heldout, seed)
    train_x, test_x = texts[: TEXT_SPLIT.train], texts[TEXT_SPLIT.train :]
    train_y, test_y = labels[: TEXT_SPLIT.train], labels[TEXT_SPLIT.train :]

    counts = CountVectorizer(ngram_range=(1, 2), min_df=2)
    tfidf = TfidfTransformer()
    classifier = LogisticRegression(C=10.0, max_iter=1000, random_state=seed)
    classifier.fit(tfidf.fit_transform(counts.fit_transform(train_x)), train_y)
    accuracy = float(classifier.score(tfidf.transform(counts.transform(test_x)), test_y))
    # A cache key holding a memory address (id of stop_words): it makes the pickle differ on
    # every run and means nothing in another process. Without it, sklearn redoes a trivial
    # stop-words check on first use.
    vars(counts).pop("_stop_words_id", None)

    return write_model(
        out,
        name,
        stages=[
            (f"PreProc1_{name}.joblib", counts),
            (f"PreProc2_{name}.joblib", tfidf),
            (f"{name}.joblib", classifier),
        ],
        input_spec={"kind": "text", "field": "text"},
        labels=TEXT_LABELS,
        examples=[
            {"text": "great product, works well"},
            {"text": "broke after a day"},
            {"text": "Honestly, the kettle: not worth the price. it leaks everywhere."},
            {"text": "Love it, easy to set up and the sound is great. Would buy again."},
        ],
        training={
            "example": "text",
            "seed": seed,
            "train_samples": TEXT_SPLIT.train,
            "heldout_samples": TEXT_SPLIT.heldout,
            "heldout_accuracy": round(accuracy, 4),
        },
    )


# %% Train the numeric model
NUMERIC_SPLIT = Split(train=8000, heldout=2000)


def train_numeric(out: Path, name: str = "income", seed: int = 0) -> Path:
    """Train the census-like income Pipeline and write its model directory to ``out``."""
    check_name(name)
    features, labels = make_census(NUMERIC_SPLIT.train + NUMERIC_SPLIT.heldout, seed)
    train_x, test_x = features[: NUMERIC_SPLIT.train], features[NUMERIC_SPLIT.train :]
    train_y, test_y = labels[: NUMERIC_SPLIT.train], labels[NUMERIC_SPLIT.train :]

    pipeline: Pipeline = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
    )
    pipeline.fit(train_x, train_y)
    accuracy = float(pipeline.score(test_x, test_y))
    examples = [
        dict(zip(FEATURES, values, strict=True))
        for values in (
            [39, 13, 40, 2174, 0],
            [50, 13, 13, 0, 0],
            [38, 9, 40, 0, 0],
            [52, 16, 60, 15024, 0],
            [31, 14, 50, 0, 1902.5],
        )
    ]
    return write_model(
        out,
        name,
        stages=[(f"{name}.joblib", pipeline)],
        input_spec={"kind": "features", "features": FEATURES},
        labels=[str(label) for label in pipeline.classes_],
        examples=examples,
        training={
            "example": "numeric",
            "seed": seed,
            "train_samples": NUMERIC_SPLIT.train,
            "heldout_samples": NUMERIC_SPLIT.heldout,
            "heldout_accuracy": round(accuracy, 4),
        },
    )


# %% Summaries
def summary(model_dir: Path) -> str:
    """One line per model directory: where, what, and its held-out accuracy."""
    metadata = json.loads((Path(model_dir) / "metadata.json").read_text())
    stages = " -> ".join(metadata["stages"])
    accuracy = metadata["training"]["heldout_accuracy"]
    return f"{model_dir}: {metadata['name']} [{stages}] held-out accuracy {accuracy:.3f}"


# %% Command line (script only)
EXAMPLES = {"text": train_text, "numeric": train_numeric}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train the chosen example, print where it went and how good it is."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train an mlayer sample model into a model directory (MODEL_DIR).",
    )
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument(
        "--example", choices=sorted(EXAMPLES), default="text", help="which sample (default: text)"
    )
    parser.add_argument(
        "--name",
        type=_argparse_name,
        help="model name (default: sentiment for text, income for numeric)",
    )
    parser.add_argument(
        "--seed", type=_argparse_seed, default=0, help="data and model seed (default: 0)"
    )
    args = parser.parse_args(argv)

    train = EXAMPLES[args.example]
    started = time.perf_counter()
    try:
        out = train(args.out, **({"name": args.name} if args.name else {}), seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"train.py: error: cannot write the model to {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"{summary(out)} ({time.perf_counter() - started:.1f} s)")
    return 0


def _argparse_name(value: str) -> str:
    import argparse

    try:
        return check_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _argparse_seed(value: str) -> int:
    import argparse

    try:
        seed = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {value!r}: pass an integer") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"invalid seed {seed}: pass 0 <= seed < 2**32")
    return seed


if __name__ == "__main__":
    raise SystemExit(main())
