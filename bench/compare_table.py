#!/usr/bin/python3
"""Helper of bench/run_compare.sh; also usable alone to re-render a results file.

  compare_table.py table RESULTS.jsonl
      prints the Markdown comparison table of a run_compare results file.
  compare_table.py wrap --role ROLE --engine-default NAME --model M --batch B --threads T
                        --iters N --warmup W --rc RC --stdout FILE --stderr FILE
                        [--row K] [--busy PCT] [--wall-s S] [--cmd STRING]
      turns one benchmark command's outcome into ONE JSON line: the last JSON object line the
      command printed on stdout, plus run_compare's bookkeeping fields; or an error row
      ({"error": ...}) when the command failed or printed no JSON object.
"""

import argparse
import json
import sys

ROLES = ("ours", "ort", "torch")


def _last_json_object(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def _read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cmd_wrap(a):
    out, err = _read(a.stdout), _read(a.stderr)
    obj = _last_json_object(out) if a.rc == 0 else None
    row = {"role": a.role, "row": a.row}
    if obj is not None and isinstance(obj.get("median_ms"), (int, float)):
        row.update(obj)
        row.setdefault("engine", a.engine_default)
    else:
        if a.rc == 0:
            why = "no JSON line with median_ms on stdout"
        elif a.rc == 124:
            why = "timed out"
        elif a.rc == 127:
            why = "command not found"
        else:
            why = "exit code %d" % a.rc
        tail = [l for l in (err.strip() or out.strip()).splitlines() if l.strip()][-3:]
        row.update({"engine": a.engine_default, "model": a.model, "batch": a.batch,
                    "threads": a.threads, "iters": a.iters, "warmup": a.warmup,
                    "error": why + (": " + " | ".join(tail) if tail else ""),
                    "exit_code": a.rc})
    # run_compare's view of the row: what was asked for (the table is keyed by it)
    for k, v in (("model", a.model), ("batch", a.batch), ("threads", a.threads),
                 ("iters", a.iters), ("warmup", a.warmup)):
        row.setdefault(k, v)
    row.update({"role": a.role, "row": a.row, "zoo_model": a.model,
                "request": {"model": a.model, "batch": a.batch, "threads": a.threads,
                            "iters": a.iters, "warmup": a.warmup}})
    if a.busy is not None:
        row["machine_busy_pct_before"] = a.busy
    if a.wall_s is not None:
        row["command_wall_s"] = a.wall_s
    if a.cmd:
        row["command"] = a.cmd
    print(json.dumps(row, separators=(",", ":")))
    return 0


def _fmt_ms(r):
    if r is None:
        return "–"
    if "error" in r:
        return "error"
    v = r["median_ms"]
    return "%.3f" % v if v < 1 else ("%.2f" % v if v < 100 else "%.1f" % v)


def cmd_table(a):
    rows = {}
    order = []
    meta = None
    with open(a.results) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                print("compare_table.py: %s:%d: not JSON, skipped" % (a.results, n),
                      file=sys.stderr)
                continue
            if obj.get("kind") == "meta":
                meta = obj
                continue
            req = obj.get("request") or obj
            key = (req.get("model"), req.get("batch"), req.get("threads"))
            if key not in rows:
                rows[key] = {}
                order.append(key)
            rows[key][obj.get("role")] = obj
    if meta:
        print("Run %s on %s (%s CPUs), engine %s\n" % (meta.get("date", "?"), meta.get("cpu", "?"),
                                                      meta.get("nproc", "?"),
                                                      meta.get("engine_bin", "?")))
    print("| model | batch | threads | ours ms | ORT ms | torch ms | ours/ORT | busy% |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in order:
        r = rows[key]
        ours, ort, torch = r.get("ours"), r.get("ort"), r.get("torch")
        ratio = "–"
        if ours and ort and "error" not in ours and "error" not in ort and ort["median_ms"] > 0:
            ratio = "%.2f" % (ours["median_ms"] / ort["median_ms"])
        busy = [x.get("machine_busy_pct_before") for x in (ours, ort, torch) if x]
        busy = [b for b in busy if b is not None]
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            key[0], key[1], key[2], _fmt_ms(ours), _fmt_ms(ort), _fmt_ms(torch), ratio,
            ("%d" % max(busy)) if busy else "–"))
    errors = [(k, x) for k in order for x in rows[k].values() if "error" in x]
    if errors:
        print("\nErrors:")
        seen = set()
        for k, x in errors:
            msg = "%s: %s" % (x.get("role"), x["error"])
            if msg in seen:
                continue
            seen.add(msg)
            print("- %s %s: %s" % (k[0], "b%s t%s" % (k[1], k[2]), msg))
    print("\nms = median latency of one run of the whole batch; ours/ORT < 1 means ours is faster; "
          "busy% = CPU use by other processes measured just before the row (should be ~0).")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action")
    t = sub.add_parser("table", help="print the Markdown table of a results .jsonl file")
    t.add_argument("results")
    w = sub.add_parser("wrap", help="turn one command's outcome into a JSON line")
    w.add_argument("--role", required=True, choices=ROLES)
    w.add_argument("--engine-default", required=True)
    w.add_argument("--model", required=True)
    w.add_argument("--batch", type=int, required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--iters", type=int, required=True)
    w.add_argument("--warmup", type=int, required=True)
    w.add_argument("--rc", type=int, required=True)
    w.add_argument("--stdout", required=True)
    w.add_argument("--stderr", required=True)
    w.add_argument("--row", type=int, default=0)
    w.add_argument("--busy", type=int)
    w.add_argument("--wall-s", type=float)
    w.add_argument("--cmd")
    a = p.parse_args(argv)
    if a.action == "wrap":
        return cmd_wrap(a)
    if a.action == "table":
        try:
            return cmd_table(a)
        except OSError as e:
            sys.exit("compare_table.py: %s" % e)
    p.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
