"""Copy the benchmark scripts' markdown reports into BENCHMARKS.md, verbatim, between markers.

BENCHMARKS.md mixes prose with script output; the output parts sit between
``<!-- begin NAME -->`` and ``<!-- end NAME -->`` lines and are only ever written by this script,
so no number in them is typed by hand.

    python tests/benchmarks/fidelity.py --budget quick --report-only --report /tmp/fidelity.md
    python tests/benchmarks/speed.py --report /tmp/speed.md
    python tests/benchmarks/splice_report.py BENCHMARKS.md fidelity=/tmp/fidelity.md speed=/tmp/speed.md
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path


def splice(document: str, name: str, report: str) -> str:
    pattern = re.compile(rf"(<!-- begin {re.escape(name)} -->\n).*?(<!-- end {re.escape(name)} -->)", re.DOTALL)
    if not pattern.search(document):
        raise ValueError(f"no '<!-- begin {name} -->' ... '<!-- end {name} -->' markers in the document")
    return pattern.sub(lambda match: match.group(1) + report.rstrip("\n") + "\n" + match.group(2), document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", type=Path)
    parser.add_argument("reports", nargs="+", metavar="NAME=FILE")
    args = parser.parse_args(argv)
    text = args.document.read_text(encoding="utf-8")
    for item in args.reports:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"expected NAME=FILE, got {item!r}")
        try:
            text = splice(text, name, Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            print(f"{args.document}: {error}", file=sys.stderr)
            return 1
    handle, temporary = tempfile.mkstemp(dir=args.document.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temporary, args.document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
