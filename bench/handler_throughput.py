"""Records/s of the Lambda handler on Kinesis events vs bare predict on decoded inputs.

    python bench/handler_throughput.py                      # trains the sample models first
    python bench/handler_throughput.py --text-model DIR --numeric-model DIR --rounds 9
    python bench/handler_throughput.py --profile 100        # cProfile of the handler path
    python bench/handler_throughput.py --profile 100 --profile-model dataframe

Three models: the sample text and numeric models (training/train.py), and a DataFrame model
trained here on generated data (a ColumnTransformer one-hot encoding two string columns and
scaling two numeric ones, then HistGradientBoostingClassifier, fitted on a pandas DataFrame;
its metadata.json input is what the function's ``schema.infer_input`` says of it).

For each batch size (1, 100, 1,000, 10,000 records) the handler is timed on a Kinesis event
whose base64 data are JSON objects, in this process, the model already loaded (a warm
invocation, no sink configured, its log line written to /dev/null). "bare predict" is what a
hand-written function would call on the already-decoded inputs: each stage's ``transform``
then the last stage's ``predict``, no probability, no decoding, no response (for the
DataFrame model: the Pipeline's ``predict`` on a DataFrame of the records built beforehand,
so its ratio includes the handler's building of the DataFrame). The ratio is handler time /
bare time: the handler's whole overhead (decoding, probabilities, identities, the response,
the log line). Rounds alternate the two; times are this process's CPU time by default
(``--clock wall`` for elapsed time) and the best round is kept, with the median of the
rounds' paired ratios beside it.

The metrics' cost: each round also times the handler with the batch line's CloudWatch EMF
members left out (``metrics.add_members`` swapped for one that adds nothing, in this
process only: the product has no switch for it), the two handlers alternating in chunks of
a tenth of a round so that both meet the same load. "ratio w/o EMF" is that handler over
bare predict, "EMF cost" the median over rounds of (handler / handler without EMF - 1),
"best rounds" the same from the best rounds, and "EMF build us" the time
``metrics.add_members`` (through ``batch_members``) takes for the batch's predictions. The issue's bar is 3% at
100 records.

Not measured here: Lambda's runtime encodes the returned response as JSON after the
handler returns (about 24 ms for 10,000 predictions, 2.8 MB, on this machine).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import dataclasses
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_DIR = ROOT / "function"
SIZES = (1, 100, 1_000, 10_000)
TARGETS = {100: 1.15, 10_000: 1.10}  # text model, from the issue
EMF_BUDGET = 0.03  # the metrics may cost at most 3% of the handler at 100 records (issue 13)

# Review-like vocabulary, mixed with the model's own: realistic lengths and hit rates.
WORDS = (  # noqa: SIM905 - prose reads better than a list of 70 strings
    "the product arrived quickly and works as described great value for money would buy "
    "again broke after a day terrible quality do not recommend the battery died screen "
    "cracked customer service was helpful slow shipping but good packaging excellent sound "
    "cheap plastic feels sturdy easy to set up instructions were confusing love it returned "
    "it stopped working after two weeks five stars one star okay not bad my kids enjoy it"
).split()


def train(example: str, out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "training" / "train.py"),
            "--out",
            str(out),
            "--example",
            example,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def texts(count: int, model_dir: Path, rng: random.Random) -> list[str]:
    meta = json.loads((model_dir / "metadata.json").read_text())
    pool = list(WORDS)
    for example in meta.get("examples", []):
        if isinstance(example, dict) and isinstance(
            example.get(meta["input"].get("field", "text")), str
        ):
            pool.extend(example[meta["input"].get("field", "text")].split())
    return [" ".join(rng.choices(pool, k=rng.randint(8, 30))) for _ in range(count)]


def feature_rows(count: int, model_dir: Path, rng: random.Random) -> list[dict[str, float]]:
    meta = json.loads((model_dir / "metadata.json").read_text())
    names = meta["input"]["features"]
    base = next((e for e in meta.get("examples", []) if isinstance(e, dict)), {})
    return [
        {name: round(float(base.get(name, 1.0)) * rng.uniform(0.5, 1.5), 3) for name in names}
        for _ in range(count)
    ]


CITIES = ("Lisbon", "Porto", "Braga", "Faro", "Coimbra", "Aveiro", "Evora", "Leiria")
PLANS = ("basic", "plus", "family")
DATAFRAME_FEATURES = ("city", "plan", "age", "income")


def customers(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Customer records as a producer writes them: two string and two numeric fields."""
    return [
        {
            "city": rng.choice(CITIES),
            "plan": rng.choice(PLANS),
            "age": rng.randint(18, 90),
            "income": round(rng.lognormvariate(10.3, 0.5), 2),
        }
        for _ in range(count)
    ]


def customer_frame(records: list[dict[str, Any]]) -> Any:
    """The records as a DataFrame in the training dtypes: numbers float64, strings object."""
    import pandas as pd

    frame = pd.DataFrame(records, columns=list(DATAFRAME_FEATURES))
    return frame.astype({"age": "float64", "income": "float64"})


def train_dataframe(out: Path, rows: int = 4_000) -> Path:
    """Fit the DataFrame model on generated customers and write its model directory."""
    import joblib
    import schema
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = random.Random(20261130)
    records = customers(rows, rng)
    # Churn is likelier on the basic plan, for the young, on low incomes, in two cities.
    labels = [
        "churn"
        if (
            (r["plan"] == "basic") * 1.2
            + (r["age"] < 30) * 0.8
            + (r["income"] < 25_000) * 0.9
            + (r["city"] in ("Faro", "Evora")) * 0.6
            + rng.gauss(0, 0.6)
        )
        > 1.5
        else "stay"
        for r in records
    ]
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        # Dense, so that HistGradientBoostingClassifier takes the output
                        # whatever the share of one-hot columns.
                        (
                            "cat",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                            ["city", "plan"],
                        ),
                        ("num", StandardScaler(), ["age", "income"]),
                    ]
                ),
            ),
            ("model", HistGradientBoostingClassifier(max_iter=100, random_state=0)),
        ]
    )
    pipeline.fit(customer_frame(records), labels)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, out / "churn.joblib")
    meta = {
        "name": "churn",
        "stages": ["churn.joblib"],
        "input": schema.infer_input([pipeline]),
        "labels": None,
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def payloads_and_inputs(
    kind: str, size: int, model_dir: Path, rng: random.Random
) -> tuple[list[dict[str, Any]], Any]:
    """The records of a batch as JSON objects, and the decoded inputs bare predict takes."""
    meta = json.loads((model_dir / "metadata.json").read_text())
    if kind == "text":
        inputs = texts(size, model_dir, rng)
        field = meta["input"].get("field", "text")
        return [{"id": f"r{i}", field: text} for i, text in enumerate(inputs)], inputs
    if kind == "dataframe":
        records = customers(size, rng)
        return records, customer_frame(records)
    import numpy as np

    rows = feature_rows(size, model_dir, rng)
    names = meta["input"]["features"]
    return rows, np.asarray([[p[n] for n in names] for p in rows], dtype=np.float64)


def kinesis_event(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    records = []
    for index, payload in enumerate(payloads):
        sequence = f"4959033827149025660855969253836157109592157598913{index:07d}"
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": str(index % 16),
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(json.dumps(payload).encode()).decode(),
                    "approximateArrivalTimestamp": 1545084650.987,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000006:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/reviews",
            }
        )
    return {"Records": records}


def bare_predict(model_dir: Path) -> Callable[[Any], Any]:
    """The stages as a hand-written function calls them (fresh objects, no shared state)."""
    import joblib

    meta = json.loads((model_dir / "metadata.json").read_text())
    stages = [joblib.load(model_dir / name) for name in meta["stages"]]

    def predict(inputs: Any) -> Any:
        for stage in stages[:-1]:
            inputs = stage.transform(inputs)
        return stages[-1].predict(inputs)

    return predict


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(call: Callable[[], Any], number: int, clock: Callable[[], float]) -> float:
    started = clock()
    for _ in range(number):
        call()
    return (clock() - started) / number


@contextlib.contextmanager
def without_emf() -> Iterator[None]:
    """The handler as it was before its batch line became an EMF record: the members
    ``metrics.add_members`` adds are left out (for measuring their cost only)."""
    import lambda_function

    real = lambda_function.metrics
    lambda_function.metrics = _NoMetrics  # type: ignore[assignment]
    try:
        yield
    finally:
        lambda_function.metrics = real


class _NoMetrics:
    @staticmethod
    def add_members(line: dict[str, Any], **_: Any) -> None:
        return None


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield


@dataclasses.dataclass
class Timing:
    """Seconds per call (best round) and the medians of the rounds' paired ratios."""

    handler_s: float
    plain_s: float
    bare_s: float
    paired: float  # handler / bare
    emf_cost: float  # handler / handler without EMF - 1


def measure(
    handler: Callable[[Any, Any], Any],
    bare: Callable[[Any], Any],
    event: dict[str, Any],
    decoded: Any,
    rounds: int,
    budget_s: float,
    clock: Callable[[], float],
) -> Timing:
    """Seconds per call of the handler, of the handler without the EMF members, and of
    bare predict (best round), and the medians of the rounds' paired ratios.

    Rounds alternate the three (the two handlers chunk by chunk within a round). On a
    shared machine other processes only ever slow a round down, so the best round is the
    least disturbed measurement (timeit's advice); the median paired ratio (each round's
    handler time over the time measured beside it) is shown next to it as a check.
    """
    once = timed(lambda: handler(event, None), 1, time.perf_counter)
    number = max(1, int(budget_s / rounds / 3 / max(once, 1e-6)))
    # The two handlers differ by microseconds: they alternate in chunks of a tenth of a
    # round, so that both meet the same load from other processes.
    chunk = max(1, number // 10)
    handler_times: list[float] = []
    plain_times: list[float] = []
    bare_times: list[float] = []
    for index in range(rounds):
        spent = {nothing: 0.0, without_emf: 0.0}
        for part, start in enumerate(range(0, number, chunk)):
            calls = min(chunk, number - start)
            order = [nothing, without_emf]
            for setting in order if (index + part) % 2 else order[::-1]:
                with setting():
                    spent[setting] += calls * timed(lambda: handler(event, None), calls, clock)
        handler_times.append(spent[nothing] / number)
        plain_times.append(spent[without_emf] / number)
        bare_times.append(timed(lambda: bare(decoded), number, clock))
    return Timing(
        handler_s=min(handler_times),
        plain_s=min(plain_times),
        bare_s=min(bare_times),
        paired=statistics.median(h / b for h, b in zip(handler_times, bare_times, strict=True)),
        emf_cost=statistics.median(
            h / p - 1 for h, p in zip(handler_times, plain_times, strict=True)
        ),
    )


def emf_build_s(labels: list[Any], probabilities: list[Any], clock: Callable[[], float]) -> float:
    """Seconds ``metrics.batch_members`` takes for these predictions (best of 5 runs)."""
    import metrics

    def build() -> None:
        metrics.batch_members(
            function="scorer",
            model_version="1",
            records=len(labels),
            predictions=len(labels),
            bad_records=0,
            sink_failures=0,
            timings={"decode_ms": 0.1, "predict_ms": 1.0, "write_ms": 0.0},
            labels=labels,
            probabilities=probabilities,
        )

    number = max(1, 20_000 // max(len(labels), 1))
    return min(timed(build, number, clock) for _ in range(5))


# records, handler rec/s, bare rec/s, ratio, paired ratio, ratio without EMF, EMF cost,
# EMF build seconds
Row = tuple[int, float, float, float, float, float, float, float]


def run_model(
    kind: str,
    model_dir: Path,
    sizes: tuple[int, ...],
    rounds: int,
    budget_s: float,
    clock: Callable[[], float],
) -> list[Row]:
    os.environ["MODEL_DIR"] = str(model_dir)
    for name in ("INPUT_FIELD", "OUTPUT_TABLE", "OUTPUT_STREAM", "DEAD_LETTER_QUEUE_URL"):
        os.environ.pop(name, None)
    with contextlib.redirect_stdout(io.StringIO()):
        import lambda_function
        import model as model_module

        model_module.get_model()
    bare = bare_predict(model_dir)
    rng = random.Random(20261123)
    rows = []
    devnull = open(os.devnull, "w")  # noqa: SIM115 - held for the whole run
    for size in sizes:
        payloads, decoded = payloads_and_inputs(kind, size, model_dir, rng)
        event = kinesis_event(payloads)
        with contextlib.redirect_stdout(devnull):
            response = lambda_function.lambda_handler(event, None)
            assert response["counts"]["predicted"] == size, response["counts"]
            timing = measure(
                lambda_function.lambda_handler, bare, event, decoded, rounds, budget_s, clock
            )
        predictions = response["predictions"]
        build_s = emf_build_s(
            [p["label"] for p in predictions], [p["probability"] for p in predictions], clock
        )
        rows.append(
            (
                size,
                size / timing.handler_s,
                size / timing.bare_s,
                timing.handler_s / timing.bare_s,
                timing.paired,
                timing.plain_s / timing.bare_s,
                timing.emf_cost,
                build_s,
            )
        )
    return rows


def render(title: str, rows: list[Row], targets: dict[int, float]) -> None:
    header = (
        "records",
        "handler rec/s",
        "bare predict rec/s",
        "ratio",
        "median paired ratio",
        "target",
        "ratio w/o EMF",
        "EMF cost",
        "best rounds",
        "EMF build us",
    )
    lines = [
        (
            f"{size:,}",
            f"{handler:,.0f}",
            f"{bare:,.0f}",
            f"{ratio:.3f}",
            f"{paired:.3f}",
            (f"<= {targets[size]:.2f} " + ("met" if ratio <= targets[size] else "MISSED"))
            if size in targets
            else "",
            f"{plain:.3f}",
            f"{cost:+.1%}" + (" (over 3%)" if size == 100 and cost > EMF_BUDGET else ""),
            f"{ratio / plain - 1:+.1%}",
            f"{build_s * 1e6:,.1f}",
        )
        for size, handler, bare, ratio, paired, plain, cost, build_s in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
        for line in lines:
            print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        return
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right")
    for line in lines:
        table.add_row(*line)
    Console().print(table)


def profile(kind: str, model_dir: Path, size: int) -> None:
    os.environ["MODEL_DIR"] = str(model_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        import lambda_function
    rng = random.Random(1)
    event = kinesis_event(payloads_and_inputs(kind, size, model_dir, rng)[0])
    number = max(1, 20_000 // size)
    profiler = cProfile.Profile()
    with contextlib.redirect_stdout(io.StringIO()):
        profiler.enable()
        for _ in range(number):
            lambda_function.lambda_handler(event, None)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def model_dir(kind: str, given: Path | None, tmp: Path) -> Path:
    """The model directory given on the command line, else one trained now."""
    if given is not None:
        return given
    if kind == "dataframe":
        return train_dataframe(tmp / "dataframe")
    return train(kind, tmp / kind)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--text-model", type=Path, help="model directory (default: train the sample)"
    )
    parser.add_argument(
        "--numeric-model", type=Path, help="model directory (default: train the sample)"
    )
    parser.add_argument(
        "--dataframe-model",
        type=Path,
        help="model directory of a model reading city, plan, age, income (default: train one)",
    )
    parser.add_argument("--no-numeric", action="store_true", help="skip the numeric model's table")
    parser.add_argument(
        "--no-dataframe", action="store_true", help="skip the DataFrame model's table"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds, best kept")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timing per size")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: this process's CPU time (steady on a shared machine); wall: elapsed time",
    )
    parser.add_argument(
        "--profile", type=int, metavar="RECORDS", help="profile the handler instead"
    )
    parser.add_argument(
        "--profile-model",
        choices=("text", "numeric", "dataframe"),
        default="text",
        help="the model --profile runs (default: text)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(FUNCTION_DIR))
    given = {
        "text": args.text_model,
        "numeric": args.numeric_model,
        "dataframe": args.dataframe_model,
    }

    with tempfile.TemporaryDirectory(prefix="mlayer-bench-") as tmp:
        if args.profile:
            kind = args.profile_model
            profile(kind, model_dir(kind, given[kind], Path(tmp)), args.profile)
            return
        import sklearn

        print(
            f"python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
            # HistGradientBoosting predicts on OpenMP threads: their CPU time counts too.
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}, "
            f"{args.clock} clock, best of {args.rounds} alternating rounds per size"
        )
        sizes = tuple(args.sizes)
        kinds = ["text"]
        kinds += [] if args.no_numeric else ["numeric"]
        kinds += [] if args.no_dataframe else ["dataframe"]
        for kind in kinds:
            directory = model_dir(kind, given[kind], Path(tmp))
            title = "DataFrame" if kind == "dataframe" else kind
            render(
                f"{title} model ({directory.name}): handler vs bare predict",
                run_model(kind, directory, sizes, args.rounds, args.budget, CLOCKS[args.clock]),
                TARGETS if kind == "text" else {},
            )


if __name__ == "__main__":
    main()
