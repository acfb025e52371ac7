"""What a batch's payloads and ledger hold in memory per item, traced (``tracemalloc``).

The payloads as ``SegmindBatchOperator.execute`` reads them (``batch.items.checked_payloads`` over a
JSON Lines file of bench/batch_scale.py's payloads, validated), then the ``Ledger`` of their items:
bytes per item of each, so a peak RSS can be told apart from what the batch itself keeps.

Usage: ``python bench/batch_memory.py --n 10000`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_scale import write_payloads_file

from segmind_provider.batch.items import checked_payloads
from segmind_provider.batch.ledger import Item, Ledger
from segmind_provider.durable import fingerprint

MODEL = "flux-1.1-pro"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="segmind-batch-memory-") as scratch:
        path = write_payloads_file(args.n, Path(scratch))
        tracemalloc.start()
        payloads = checked_payloads(MODEL, str(path), validate=True)
        after_payloads, _ = tracemalloc.get_traced_memory()
        ledger = Ledger((Item(key, fingerprint(MODEL, p)) for key, p in payloads.items()), time.time())
        after_ledger, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"{len(ledger.items)} items")
    print(f"payloads: {after_payloads / args.n:.0f} bytes per item")
    print(f"ledger:   {(after_ledger - after_payloads) / args.n:.0f} bytes per item")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
