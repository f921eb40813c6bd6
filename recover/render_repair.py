"""Renderers of `recover repair` and `repair --undo`: a plan or its outcome as a table or JSON."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import orjson

from .fsread import json_text, printable, short_process
from .render import PLAIN, Display, _table, _undisplayed, short_id

if TYPE_CHECKING:
    from .repair import Action, Reverted

class RepairFormat(str, enum.Enum):
    table = "table"
    json = "json"


REPAIR_HEADERS = ("CONTAINER", "PROCESS", "ACTION", "VALUE", "RESULT", "REASON")
RESULT_COLOUR = {"applied": "green", "skipped": "yellow", "failed": "red", "not-reverted": "red"}


def action_json(a: Action) -> dict:
    return {"container": json_text(a.container), "process": None if a.process is None else json_text(a.process),
            "action": a.kind, "value": a.value, "result": a.result, "reason": a.reason,
            "detail": a.detail or None, "pid": a.pid, "target": a.target}


def repair_summary(actions: list[Action]) -> dict:
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.result] = counts.get(a.result, 0) + 1
    return dict(sorted(counts.items()))


def render_repair_table(actions: list[Action], meta: dict, out: BinaryIO, display: Display = PLAIN) -> None:
    rows = [(printable(short_id(a.container)), printable(short_process(a.process) if a.process else "-"), a.kind,
             a.value or "-", a.result,
             a.reason + (f" [{a.detail}]" if a.detail else "")) for a in actions]
    table = _table(rows, REPAIR_HEADERS, display, shrinkable=[1, 3, 5], empty="(nothing to repair)",
                   caps=[None, None, None, None, None, 70], paint={4: lambda r: display.paint(r, RESULT_COLOUR.get(r))})
    lines = [table, ""]
    counts = ", ".join(f"{k} {v}" for k, v in repair_summary(actions).items()) or "no actions"
    if not any(a.kind != "none" for a in actions):
        mode = "nothing to do: nothing was changed"
    elif meta["apply"]:
        mode = f"applied; journal: {meta['journal']}"
    else:
        mode = "dry run: nothing was changed (add --apply)"
    lines.append(f"{len(actions)} action(s): {counts}. {mode}")
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


def render_repair_json(actions: list[Action], meta: dict, out: BinaryIO) -> None:
    out.write(orjson.dumps({"schema": "recover.repair/1", **meta, "actions": [action_json(a) for a in actions],
                            "summary": repair_summary(actions)}) + b"\n")


REPAIR_RENDERERS: dict[RepairFormat, Callable[..., None]] = {
    RepairFormat.table: render_repair_table,
    RepairFormat.json: _undisplayed(render_repair_json),
}

UNDO_HEADERS = ("RESULT", "ACTION", "PATH", "DETAIL")


def undo_summary(reverted: list[Reverted]) -> dict:
    return {result: sum(r.result == result for r in reverted) for result in ("reverted", "not-reverted")}


def render_undo_table(reverted: list[Reverted], journal: str, out: BinaryIO, display: Display = PLAIN) -> None:
    rows = [(r.result, r.action, printable(r.path), printable(r.detail)) for r in reverted]
    table = _table(rows, UNDO_HEADERS, display, shrinkable=[2, 3], empty="(nothing to undo)",
                   paint={0: lambda r: display.paint(r, RESULT_COLOUR.get(r))})
    counts = ", ".join(f"{k} {v}" for k, v in undo_summary(reverted).items())
    lines = [table, "", f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}: {counts}. "
             f"journal: {printable(journal)}"]
    out.write(("\n".join(lines) + "\n").encode("utf-8", "backslashreplace"))


def render_undo_json(reverted: list[Reverted], journal: str, out: BinaryIO) -> None:
    out.write(orjson.dumps({"schema": "recover.undo/1", "journal": json_text(journal),
                            "entries": [{"path": json_text(r.path), "action": r.action, "result": r.result,
                                         "detail": json_text(r.detail)} for r in reverted],
                            "summary": undo_summary(reverted)}) + b"\n")


UNDO_RENDERERS: dict[RepairFormat, Callable[..., None]] = {
    RepairFormat.table: render_undo_table,
    RepairFormat.json: _undisplayed(render_undo_json),
}
