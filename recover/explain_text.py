"""`recover explain`'s text: the recover.explain/1 document (recover/explain.py) in words, with
each generation's own lines (its explainer's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from .explain import Q, iso, shown, told
from .fsread import printable
from .generations import generation_named


def _log_line(entry: dict) -> str:
    if "raw" in entry:
        return f"(not JSON, raw) {printable(entry['raw'])}"
    head = " ".join(f"{k}={printable(shown(entry[k]))}" for k in ("time", "level", "msg") if k in entry)
    rest = " ".join(f"{printable(str(k))}={printable(shown(v))}" for k, v in entry.items()
                    if k not in ("time", "level", "msg"))
    return (head + " " + rest).strip()


def _resource_lines(now: dict) -> list[str]:
    r = now["resources"]
    if r is None:
        return [f"  resources: {now['resources_note']}"]
    why = r["cannot_tell"]

    def told(key: str, form: Callable[[Any], str]) -> str:
        return form(r[key]) if r[key] is not None else f"cannot tell ({why.get(key, '?')})"

    lines = [f"  resources: rss {told('rss_bytes', lambda b: f'{b / 1048576:.1f} MiB')}, "
             f"threads {told('threads', str)}, "
             f"cpu {told('cpu_user_s', lambda t: f'{t:.2f} s user')}"
             + (f" + {r['cpu_system_s']:.2f} s system" if r["cpu_system_s"] is not None else "")]
    for key, title, line in (("open_files", "open files", lambda f: f"fd {f['fd']} {printable(f['path'])}"),
                             ("sockets", "sockets", lambda c: f"fd {c['fd']} {c['family']} {c['type']} "
                              f"{printable(c['local'] or '-')} -> {printable(c['remote'] or '-')} {c['status']}")):
        if r[key] is None:
            lines.append(f"  {title}: cannot tell ({why.get(key, '?')})")
            continue
        shown = r[key]
        lines.append(f"  {title}: {r[key + '_count']}" + (f" (first {len(shown)} shown)" if len(shown) < r[key + "_count"] else ""))
        lines += ["    " + line(x) for x in shown]
    return lines


def render_text(doc: dict, out: BinaryIO) -> None:
    P = printable
    name = doc["container"] if doc["namespace"] is None else f"{doc['namespace']}/{doc['container']}"
    lines = [f"container {P(name)}" + (f"  process {P(doc['process'])}" if doc["process"] else ""),
             f"root      {P(doc['root'])} ({doc['layout']}: {doc['daemon']} predicted)"]
    h = doc["host"]
    lines.append("host      " + (f"proc root {P(h['proc_root'])}, "
                                f"{told(h['btime'] and iso(h['btime'], 'seconds'), 'boot time unknown', 'booted {}')}"
                                f"{told(h['btime'], '', ' (btime {})')}, CLK_TCK {h['clock_ticks']}"
                                if h["proc_root"] else "offline: /proc not read"))
    lines += ["", "== files"]
    for d in doc["files"]:
        lines.append(f"  {P(d['dir'])}/" + (f"  (cannot be opened: {d['error']})" if d.get("error") else ""))
        for e in d["entries"]:
            size = f"{e['size']} B" if e.get("size") is not None and e["type"] == "file" else ""
            target = f" -> {P(e['target'])}" if e.get("target") else ""
            lines.append(f"    {P(e['name']):<16} {e['type']:<8} {size:>9}  {e.get('mtime') or '':<29}{target}")
            if e.get("parsed"):
                lines.append(f"        = {P(e['parsed'])}")
            lines += [f"        ! {P(x)}" for x in e["findings"]]
    for p in doc["processes"]:
        ev = p["evidence"]
        lines += ["", f"== process {P(p['id'])}: {p['verdict']}"
                  + (f" (exit status {p['exit_status']}, from {p['exit_status_source']})" if p["exit_status"] is not None else "")]
        lines.append("  how the verdict was reached (the judge's checks, in its order; the first match decides):")
        for step in ev["steps"]:
            if not step["reached"]:
                lines.append(f"    - {step['check']}: not reached")
                continue
            said = step["why"][0] if step["why"] else None
            label = f"YES -> {step['decided']}" if step["matched"] else "no"
            lines.append(f"    - {step['check']}: {label}" + (f" ({P(said)})" if said else ""))
            lines += [f"        {P(w)}" for w in step["why"][1:]]
        rec = ev["recorded"]
        lines.append(f"  recorded:  {told(rec['pid'], 'no usable pid', 'pid {}')}, "
                     f"{told(rec['start_ticks'], 'no start tick', 'start tick {}')}"
                     + (f" (= {rec['started_if_this_boot']} if from this boot)" if rec["started_if_this_boot"] else ""))
        if ev["pid_source"] == "shim-child":
            lines.append(f"  judged pid {ev['judged_pid']}: the only child of its shim (no usable pid file)")
        now = ev["proc_now"]
        lines.append("  /proc now: " + (
            f"pid {now['pid']} state {now['state']}, ppid {now['ppid']}, comm {Q(now['comm'])}, "
            f"start tick {now['start_ticks']}"
            + told(now["started"], " (when: the boot time is unknown)", " = {}") + told(now["started_epoch"], "", " (epoch {})")
            if now else ("nothing (not read)" if not doc["host"]["proc_root"] else "no such process")))
        if now:
            lines.append(f"  identity:  {ev['identity']}")
            lines += _resource_lines(now)
        par = ev["parent"]
        if par:
            argv = " ".join(par["argv"]) if par.get("argv") else "?"
            lines.append(f"  parent:    pid {par['pid']} ({Q(par['comm'] or '?')}), "
                         f"{'its shim' if par['is_its_shim'] else 'NOT its shim'}; argv {Q(argv)}, "
                         f"cwd {Q(par.get('cwd') or '?')}")
        shim = ev["shim"]
        lines.append(f"  shim:      {shim['state'] or 'unknown'}" + (
            f", pid {shim['pid']}, argv {Q(' '.join(shim.get('argv') or []) or '?')}, cwd {Q(shim.get('cwd') or '?')}"
            if shim["pid"] else ""))
        for name, log in p["logs"].items():
            lines.append(f"  {name}: " + (log["error"] or ("" if log["entries"] else "empty")))
            lines += ["    " + _log_line(x) for x in log["entries"]]
        lines.append(f"  {doc['daemon']} would: {p['containerd_would'] or 'cannot be told'}: {P(p['containerd_why'])}")
        if p["findings"]:
            lines.append("  findings:")
            lines += [f"    {f['code']} {f['severity']:<7} {P(f['message'])}" for f in p["findings"]]
    lines += ["", f"== {doc['daemon']} on restart, for the container: {doc['containerd_would'] or 'cannot be told'}"]
    if doc["containerd_why"]:
        lines.append(f"  {P(doc['containerd_why'])}")
    explainer = generation_named(doc["layout"]).explainer
    task = doc["task"]
    if task:
        lines += explainer.task_lines(task)
    lines += [f"  {f['code']} {f['severity']:<7} {P(f['message'])}" for f in doc["container_findings"]]
    lines += ["", "== recover repair would (default options, dry run):"]
    if doc["repair_would"] is None:
        lines.append(f"  nothing: repair refuses {doc['layout']} roots (it judges them)")
    else:
        lines += [f"  {P(a['process'] or '(container)')}: {a['action']}" + (f" {P(a['value'])}" if a["value"] else "")
                  + f" - {P(a['reason'])}" for a in doc["repair_would"]] or ["  nothing"]
    lines += explainer.tail_lines(doc)
    lines += ["", "== timeline"]
    lines += [f"  {told(t['time'], t['epoch'])}  " + (f"{P(t['path'])}: " if t["path"] else "") + P(t["what"])
              for t in doc["timeline"]]
    out.write(("\n".join(line.rstrip() for line in lines) + "\n").encode("utf-8", "backslashreplace"))


def render_explanation(doc: dict, out: BinaryIO, fmt: str) -> None:
    if fmt == "json":
        out.write(orjson.dumps(doc) + b"\n")
    else:
        render_text(doc, out)
