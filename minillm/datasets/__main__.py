"""Regenerate the shipped data files: `python -m minillm.datasets --out data`.

Writes corpus.txt (generate_corpus) and instructions.jsonl (generate_instruction_suite) and prints
their sizes and the time each took.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from minillm.console import OneLineParser, checked_arg, one_line, path_arg, positive_int
from minillm.datasets.corpus import generate_corpus, write_corpus
from minillm.datasets.instructions import generate_instruction_suite
from minillm.datasets.jsonl import write_jsonl
from minillm.errors import MinillmError, one_line_errors
from minillm.utils import show_unencodable_output


def main() -> None:
    parser = OneLineParser(prog="python -m minillm.datasets", description=__doc__)
    parser.add_argument("--out", type=path_arg, default="data", help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and the suite")
    parser.add_argument("--corpus-mb", type=checked_arg(float, lambda mb: 0 < mb < math.inf, "a positive, finite size"),
                        default=2.0, help="corpus size in MB")
    parser.add_argument("--n-train", type=positive_int, default=1800,
                        help="training records per task family (at most about 1870: plural runs out of inputs)")
    args = parser.parse_args()
    show_unencodable_output()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; it names the folder to write corpus.txt and instructions.jsonl into")
    start = time.perf_counter()
    try:  # both are made before either is written: a request that cannot be met leaves data/ as it was
        docs = generate_corpus(seed=args.seed, size_mb=args.corpus_mb)
        mid = time.perf_counter()
        records = generate_instruction_suite(seed=args.seed, n_train=args.n_train)
        end = time.perf_counter()
    except MinillmError as err:
        parser.error(str(err))
    try:  # a folder above --out that is a file, or one we may not write into: one line, as a `minillm` command says it
        write_corpus(out / "corpus.txt", docs)
        write_jsonl(out / "instructions.jsonl", records)
    except OSError as err:
        parser.error(one_line(err))
    made = (("corpus.txt", f"{len(docs)} documents", mid - start),
            ("instructions.jsonl", f"{len(records)} records", end - mid))
    for name, count, seconds in made:
        size = (out / name).stat().st_size / 1e6
        print(f"{out / name}: {count}, {size:.2f} MB, {seconds:.2f} s")


if __name__ == "__main__":
    one_line_errors()  # it ends as a `minillm` command does: `--help | head`, `2>&-`
    main()
