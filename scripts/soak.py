#!/usr/bin/env python3
"""Samples a running session-load (its worker processes and its embedded redis-servers) every 10 s
until it exits, then judges whether the workers' memory plateaued. Called by scripts/soak.

Usage: soak.py <session-load pid> <output directory> <minutes>
Writes <out>/samples.jsonl, <out>/soak.svg (memory and p99 over time), <out>/soak.json, and prints
the verdict's JSON as its last line.
"""
import json
import os
import re
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid):
    """Every descendant of pid: (pid, argv)."""
    found = []
    by_parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        by_parent.setdefault(int(fields[1]), []).append((int(entry), argv))
    stack = [pid]
    while stack:
        for child in by_parent.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def process_sample(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        fds = os.listdir(f"/proc/{pid}/fd")
        sockets = sum(1 for fd in fds if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"))
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
        # Anonymous resident memory: malloc's heap (the Swift heap) and thread stacks, without the
        # binary's and libraries' pages.
        anonymous = int(re.search(r"^RssAnon:\s+(\d+) kB", status, re.M).group(1)) * 1024
        return {"rss_bytes": rss, "heap_bytes": anonymous, "fds": len(fds), "sockets": sockets, "threads": threads}
    except (OSError, AttributeError):
        return None


def redis_sample(argv):
    """used_memory and keys of an embedded redis-server, by the port in its argv."""
    text = " ".join(argv)
    match = re.search(r"(?:--port|127\.0\.0\.1:)\s*(\d+)", text)
    if not match or match.group(1) == "0":
        return None
    port = match.group(1)
    try:
        info = subprocess.run(["redis-cli", "-p", port, "INFO"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    keys = sum(int(re.search(r"keys=(\d+)", v).group(1)) for k, v in fields.items() if k.startswith("db"))
    return {"port": int(port), "used_memory": int(fields.get("used_memory", 0)), "keys": keys}


def slope_per_minute(points):
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if den == 0 else sum((t - mx) * (v - my) for t, v in points) / den * 60


def svg(series, minutes, path):
    """A plain SVG: each worker's RSS and heap (MB) and the p99 (ms) over the run's minutes."""
    width, height, pad = 900, 420, 50
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    mem = [v for s in series if s["unit"] == "MB" for _, v in s["points"]] or [1]
    lat = [v for s in series if s["unit"] == "ms" for _, v in s["points"]] or [1]
    top_mem, top_lat = max(mem) * 1.1, max(lat) * 1.1
    span = max(1, minutes * 60)

    def xy(t, v, top):
        return pad + t / span * (width - 2 * pad), height - pad - v / top * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{pad}" y="20">worker memory (MB, left: {top_mem:.0f}) and p99 per minute (ms, dashed, right: {top_lat:.1f}) over {minutes} min</text>']
    for index, s in enumerate(series):
        top = top_mem if s["unit"] == "MB" else top_lat
        points = " ".join("%.1f,%.1f" % xy(t, v, top) for t, v in s["points"])
        dash = ' stroke-dasharray="4 3"' if s["unit"] == "ms" else ""
        color = colors[index % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{points}"/>')
        parts.append(f'<text x="{width - pad - 170}" y="{40 + 14 * index}" fill="{color}">{s["name"]}</text>')
    parts.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    load_pid, out, minutes = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    started = time.monotonic()
    samples = []
    with open(os.path.join(out, "samples.jsonl"), "w") as log:
        while True:
            alive = os.path.exists(f"/proc/{load_pid}") and open(f"/proc/{load_pid}/stat").read().split(")")[1].split()[0] != "Z"
            if not alive:
                break
            now = time.monotonic() - started
            sample = {"t": round(now, 1), "workers": {}, "redis": []}
            for pid, argv in children(load_pid):
                if "--worker-index" in argv:
                    worker = argv[argv.index("--worker-index") + 1]
                    figures = process_sample(pid)
                    if figures:
                        sample["workers"][worker] = figures
                elif argv and "redis-server" in argv[0]:  # Redis rewrites its title: "redis-server 127.0.0.1:port"
                    figures = redis_sample(argv)
                    if figures:
                        sample["redis"].append(figures)
            samples.append(sample)
            log.write(json.dumps(sample) + "\n")
            log.flush()
            time.sleep(max(0.0, 10 - (time.monotonic() - started - now)))

    # The workers' own samples: the live heap as the allocator counts it (glibc's mallinfo2; RSS
    # also holds what its arenas keep in reserve) every 10 s, and the p99 of each minute.
    p99s = {}
    live_heaps = {}
    for name in os.listdir(os.path.join(out, "samples")):
        match = re.match(r"worker-(\d+)\.jsonl$", name)
        if not match:
            continue
        with open(os.path.join(out, "samples", name)) as f:
            for line in f:
                row = json.loads(line)
                if "p99_ms_last_minute" in row:
                    p99s.setdefault(match.group(1), []).append((row["t"], row["p99_ms_last_minute"]))
                if "heap_in_use_bytes" in row:
                    live_heaps.setdefault(match.group(1), []).append((row["t"], row["heap_in_use_bytes"]))

    workers = sorted({w for s in samples for w in s["workers"]})
    # Only the load phase: workers stop sampling a little after it (they wait for the last expiries).
    load_end = minutes * 60
    rss = {w: [(s["t"], s["workers"][w]["rss_bytes"]) for s in samples if w in s["workers"] and s["t"] <= load_end] for w in workers}
    anon = {w: [(s["t"], s["workers"][w]["heap_bytes"]) for s in samples if w in s["workers"] and s["t"] <= load_end] for w in workers}
    heaps = {w: [(t, v) for t, v in live_heaps.get(w, []) if t <= load_end] for w in workers}
    fds = {w: [s["workers"][w]["fds"] for s in samples if w in s["workers"] and s["t"] <= load_end] for w in workers}
    half = load_end / 2

    def last_half(points):
        return [(t, v) for t, v in points if t >= half]

    rss_slopes = [slope_per_minute(last_half(rss[w])) / 1024 for w in workers]
    heap_slopes = [slope_per_minute(last_half(heaps[w])) / 1024 for w in workers]
    minute_p99 = {}
    for points in p99s.values():
        for t, v in points:
            minute_p99.setdefault(round(t / 60), []).append(v)
    minute_series = sorted((m * 60, max(v)) for m, v in minute_p99.items() if m * 60 <= load_end)
    p99_first = minute_series[0][1] if minute_series else 0.0
    p99_last = minute_series[-1][1] if minute_series else 0.0
    # The first minute holds the start (connections, library loads, empty caches): for the record,
    # the steady state's drift too, the median of minutes 2-6 against that of the last five.
    def median(values):
        values = sorted(values)
        return values[len(values) // 2] if values else 0.0
    p99_steady_start = median([v for _, v in minute_series[1:6]])
    p99_steady_end = median([v for _, v in minute_series[-5:]])

    touch_cache = int(os.environ.get("SOAK_TOUCH_CACHE", "10000"))
    sessions, passed = 0, False
    log_path = os.path.join(out, "session-load.log")
    if os.path.exists(log_path):
        text = open(log_path).read()
        match = re.search(r"checks over (\d+) sessions", text)
        sessions = int(match.group(1)) if match else 0
        passed = "all checks passed" in text

    def mb(v):
        return round(v / 1048576, 1)

    rss_start = max((rss[w][0][1] for w in workers if rss[w]), default=0)
    rss_end = max((rss[w][-1][1] for w in workers if rss[w]), default=0)
    fds_start = max((fds[w][0] for w in workers if fds[w]), default=0)
    fds_end = max((fds[w][-1] for w in workers if fds[w]), default=0)
    rss_slope = max(rss_slopes, default=0.0)
    heap_slope = max(heap_slopes, default=0.0)
    checks = {
        "rss_slope_within_64_kb_per_min": rss_slope <= 64,
        # Only where the workers reported a heap (glibc 2.33 or later): no samples, or zeros, fail.
        "heap_slope_within_64_kb_per_min": heap_slope <= 64 and all(any(v > 0 for _, v in heaps[w]) for w in workers),
        "fds_flat": fds_end <= fds_start + 4,
        "p99_last_within_20_percent_of_first": p99_first == 0 or p99_last <= p99_first * 1.2,
        "load_checks_passed": passed,
        # The bar: the run goes at least 5 times past the touch cache's entries.
        "sessions_at_least_5x_touch_cache": sessions >= 5 * touch_cache,
    }
    series = [{"name": f"worker {w} RSS", "unit": "MB", "points": [(t, v / 1048576) for t, v in rss[w]]} for w in workers]
    series += [{"name": f"worker {w} anon", "unit": "MB", "points": [(t, v / 1048576) for t, v in anon[w]]} for w in workers]
    series += [{"name": f"worker {w} heap", "unit": "MB", "points": [(t, v / 1048576) for t, v in heaps[w]]} for w in workers]
    series.append({"name": "p99 (ms)", "unit": "ms", "points": minute_series})
    svg(series, minutes, os.path.join(out, "soak.svg"))
    verdict = {
        "bench": "soak", "minutes": minutes, "sessions": sessions, "touch_cache_capacity": touch_cache, "rss_start_mb": mb(rss_start), "rss_end_mb": mb(rss_end),
        "rss_slope_kb_per_min_last_half": round(rss_slope, 1), "heap_slope_kb_per_min_last_half": round(heap_slope, 1),
        "fds_start": fds_start, "fds_end": fds_end, "p99_first_minute_ms": round(p99_first, 2),
        "p99_last_minute_ms": round(p99_last, 2), "p99_median_minutes_2_to_6_ms": round(p99_steady_start, 2),
        "p99_median_last_5_minutes_ms": round(p99_steady_end, 2), "checks_passed": all(checks.values()),
    }
    with open(os.path.join(out, "soak.json"), "w") as f:
        json.dump({"verdict": verdict, "checks": checks, "per_worker_rss_slope_kb_per_min": rss_slopes,
                   "per_worker_heap_slope_kb_per_min": heap_slopes,
                   "redis_last": samples[-1]["redis"] if samples else []}, f, indent=2)
    for name, ok in checks.items():
        print(f"{'ok    ' if ok else 'FAILED'} {name}")
    print(json.dumps(verdict, separators=(",", ":")))
    return 0 if verdict["checks_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
