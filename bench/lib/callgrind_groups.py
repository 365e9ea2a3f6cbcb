#!/usr/bin/env python3
"""Sums callgrind's exclusive (self) instruction counts by component.

usage: callgrind_groups.py ANNOTATED.txt REQUESTS
where ANNOTATED.txt is `callgrind_annotate --threshold=100 FILE` output. Prints instructions
per request for each component, largest first. Components are matched on the function's
file and name, first match wins; the allocator and memcpy stay separate (they are called by
every component, which callgrind's self counts cannot attribute).
"""
import re
import sys

GROUPS = [
    ("allocator (malloc/free)", r"malloc\.c|arena\.c|mimalloc|\bmi_|\b_mi_|__rdl_alloc|__rg_alloc|__rust_alloc|__rust_dealloc|__rdl_dealloc|__rg_dealloc|__rust_realloc"),
    ("memcpy/memmove/memcmp", r"memmove|memcpy|memset|memcmp|memchr-|strlen"),
    ("tracing (spans, fmt layer)", r"tracing_subscriber|tracing_core|/tracing-0|sharded.slab|nu_ansi_term|thread_local"),
    ("metrics (prometheus recorder)", r"metrics_exporter_prometheus|metrics_util|/metrics-0|quanta|portable.atomic"),
    ("sha256", r"sha2::|sha256"),
    ("core::fmt (format!, to_string)", r"core::fmt|alloc::fmt|as core::fmt::Write|fmt::Display|pad_integral"),
    ("hashing (SipHash, hashbrown, dashmap)", r"hash::sip|hash_one|hashbrown|dashmap|BuildHasher"),
    ("cookie/url/percent parsing", r"cookie::|percent_encoding|form_urlencoded|/url-2|idna"),
    ("http types (HeaderMap, Uri)", r"/http-1\.|http::header|http::uri|http::extensions"),
    ("hyper-util client (pool)", r"hyper_util::client|hyper_util/src/client|client/legacy|hyper_util::common::exec"),
    ("hyper HTTP/1 (server+client codec), httparse", r"/hyper-1\.|hyper::|httparse|want::|try_lock"),
    ("axum/tower/matchit (routing, middleware glue)", r"/axum-|axum::|axum_core|/tower-|tower::|tower_service|matchit|tower_http|futures_util|futures_core|pin_project"),
    ("tokio (runtime, I/O, timers)", r"tokio|mio::|parking_lot"),
    ("libc syscalls wrappers", r"libc\.so|sysdeps/unix|libpthread"),
    ("serde/json", r"serde"),
    ("time/uuid/getrandom", r"/time-0|uuid|getrandom|clock_gettime|std::time|Timespec"),
    ("labhub crates (own code)", r"labhub"),
    ("std/core/alloc (other)", r"/rustc/|std::|core::|alloc::"),
]

def main():
    path, reqs = sys.argv[1], float(sys.argv[2])
    totals = {name: 0 for name, _ in GROUPS}
    other = 0
    total = 0
    line_re = re.compile(r"^\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)$")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = line_re.match(line)
            if not m:
                continue
            count = int(m.group(1).replace(",", ""))
            what = m.group(2)
            if "PROGRAM TOTALS" in what:
                total = count
                continue
            for name, pat in GROUPS:
                if re.search(pat, what):
                    totals[name] += count
                    break
            else:
                other += count
    rows = sorted(totals.items(), key=lambda kv: -kv[1]) + [("other / unattributed", other)]
    print(f"{'component (exclusive instructions)':<48} {'instr/request':>14} {'share':>7}")
    for name, count in rows:
        if count:
            print(f"{name:<48} {count / reqs:>14,.0f} {100.0 * count / max(total, 1):>6.1f}%")
    print(f"{'total':<48} {total / reqs:>14,.0f}")

if __name__ == "__main__":
    main()
