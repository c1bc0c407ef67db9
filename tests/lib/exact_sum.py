#!/usr/bin/python3
"""The exact-sum check of secure aggregation, shared by the test suites.

For each secure round checked, the coordinator's unmasked sum
(DUMP/unmasked-rR.bin) must equal the sum of the encoded updates of exactly
the sites metrics.jsonl says it includes (DUMP/encoded-SITE-rR.bin); both are
written by the test build (make test-bin) under MEDFED_TEST_DUMP_DIR. Each
model element is compared mod 2^w, w the round's upload width (only w bits of
each travel), the trailing words (the weight n_k and the weighted training
loss n_k * loss_k) mod 2^32.

usage: exact_sum.py --metrics FILE --dump DIR [--log COORDINATOR_LOG]
                    [--round R | --all] [--roster FILE] [--quiet]
  --round R   check round R (default 1); --all: every secure round that
              completed (a row that is not aborted); an aborted round has no sum
  --log       take w from the coordinator's "keys-relayed ... bits=W" line (and
              check it against the metrics row's "bits" where the row has one);
              without it, from the row
  --roster    site names by index, one "NAME ..." line each ('#' comments);
              default site-NN
Exit 0 when every round checked holds, 1 otherwise (one line says why).
"""
import argparse
import array
import json
import re
import sys

try:
    import numpy as np
except ImportError:  # pure Python: same answer, ~50x slower
    np = None


def words(path):
    if np is not None:
        return np.fromfile(path, dtype="<u4")
    a = array.array("I")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


TAIL = 2  # the words after the elements: n_k, n_k * loss_k (aggregation/encoding.h)


def holds(total, parts, mask):
    n = len(total) - TAIL
    if any(len(p) != len(total) for p in parts):
        return "an encoded update's length differs from the sum's (%d words)" % len(total)
    if np is not None:
        acc = np.zeros(len(total), dtype=np.uint64)
        for p in parts:
            acc += p
        acc &= 0xFFFFFFFF
        diff = (acc - total.astype(np.uint64)) & mask
        bad = int(np.count_nonzero(diff[:n]))
        weight_ok = all(int(acc[n + k]) == int(total[n + k]) for k in range(TAIL))
    else:
        acc = array.array("I", [0]) * len(total)
        for p in parts:
            for j in range(len(p)):
                acc[j] = (acc[j] + p[j]) & 0xFFFFFFFF
        bad = sum((acc[j] - total[j]) & mask != 0 for j in range(n))
        weight_ok = all(acc[n + k] == total[n + k] for k in range(TAIL))
    if bad:
        return "%d of %d elements differ mod 2^w" % (bad, n)
    if not weight_ok:
        return "tail words (weight, loss) %s, the sites' sums are %s" % (
            [int(x) for x in total[n:]], [int(x) for x in acc[n:]])
    return None


def upload_width(row, log=None):
    """The round's w: from the coordinator's log line when given (checked
    against the row's "bits"), else from the row. (w, None) or (None, why)."""
    r = row["round"]
    if log is not None:
        bits = [int(m.group(1)) for m in re.finditer(
            r"round=%d phase=advertise event=keys-relayed .* bits=(\d+)" % r, log)]
        if len(bits) != 1:
            return None, "no upload width logged"
        if "bits" in row and row["bits"] != bits[0]:
            return None, "the log says w=%d, metrics %s" % (bits[0], row["bits"])
        return bits[0], None
    if "bits" in row:
        return row["bits"], None
    return None, "no upload width (give --log)"


def check_row(row, dump, log=None, names=None):
    """None when the round's unmasked sum is exact, else why not."""
    r = row["round"]
    w, why = upload_width(row, log)
    if why:
        return "round %d: %s" % (r, why)
    try:
        total = words("%s/unmasked-r%d.bin" % (dump, r))
        parts = [words("%s/encoded-%s-r%d.bin" % (dump, names[i] if names else "site-%02d" % i, r))
                 for i in row["included"]]
    except (OSError, IndexError) as e:
        return "round %d: %s" % (r, e)
    why = holds(total, parts, (1 << w) - 1)
    return "round %d (%d sites, w=%d): %s" % (r, len(parts), w, why) if why else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--log")
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--roster")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()

    rows = [json.loads(l) for l in open(a.metrics) if l.strip()]
    names = None
    if a.roster:
        names = [l.split()[0] for l in open(a.roster) if l.strip() and not l.lstrip().startswith("#")]
    log = open(a.log).read() if a.log else None
    if a.all:
        todo = [r for r in rows if r.get("secagg") and not r.get("aborted")]
        if not todo:
            print("exact_sum: no completed secure round in %s" % a.metrics)
            return 1
    else:
        todo = [r for r in rows if r.get("round") == a.round]
        if not todo:
            print("exact_sum: no row for round %d in %s" % (a.round, a.metrics))
            return 1
    for row in todo:
        why = check_row(row, a.dump, log, names)
        if why:
            print("exact_sum: " + why)
            return 1
        if not a.quiet:
            print("exact_sum: round %d: the unmasked sum is the sum of its %d sites' updates"
                  % (row["round"], len(row["included"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
