"""The node_exporter textfile of `recover watch`: a scan's outcome as Prometheus gauges made for
aggregation over a fleet (README "Fleet" says the names and the cardinality budget).

Every series has `root`; the node is the scrape's own label (instance), never ours.  Series per
container exist only for error-severity hazards (what an alert must name), capped per scan."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .fsread import printable
from .judge import ContainerJudgement
from .verdicts import VERDICTS

HAZARD_SERIES_CAP = 50


def _label(value: str) -> str:
    return printable(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())


class Outcome:
    """What one judged scan says, counted as it streams (memory flat in the root's size)."""

    def __init__(self, version: str, harm_of) -> None:
        self.version = version
        self.harm_of = harm_of
        self.verdicts: Counter[str] = Counter()
        self.would: Counter[str] = Counter()
        self.dockerd: Counter[str] = Counter()
        self.findings: Counter[tuple[str, str]] = Counter()
        self.hazards: list[tuple[str, str]] = []
        self.hazards_left_out = 0

    def add(self, c: ContainerJudgement, hazard_codes: frozenset[str]) -> None:
        for p in c.processes:
            self.verdicts[p.verdict] += 1
            self.would[p.containerd_would or "unknown"] += 1
        docker = c.extra.get("docker")
        if docker:
            self.dockerd[docker["dockerd_would"] or "unknown"] += 1
        placed = set()
        for f in (*c.findings, *(f for p in c.processes for f in p.findings)):
            self.findings[(f.code, f.severity)] += 1
            if f.code in hazard_codes and f.code not in placed:
                placed.add(f.code)
                if len(self.hazards) < HAZARD_SERIES_CAP:
                    self.hazards.append((c.key, f.code))
                else:
                    self.hazards_left_out += 1

    def add_root_findings(self, findings: Iterable) -> None:
        for f in findings:
            self.findings[(f.code, f.severity)] += 1


def _block(name: str, help_text: str, samples: list[str]) -> list[str]:
    """A metric's HELP, TYPE and samples; nothing for a metric without samples (node_exporter
    counts a family with none as a textfile error)."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples] if samples else []


def textfile(root: str, ok: bool, duration: float, ended: float, outcome: Outcome | None,
             upgrades: list[Outcome], info: dict[str, str] | None) -> bytes:
    """The whole textfile: HELP and TYPE once per metric, then its samples (sorted: a file that
    does not change when nothing changed)."""
    r = _labels(root=root)
    lines = _block("recover_scan_ok", "1 when the last scan judged the root, 0 when it could not.",
                   [f"recover_scan_ok{{{r}}} {int(ok)}"])
    lines += _block("recover_scan_duration_seconds", "How long the last scan took.",
                    [f"recover_scan_duration_seconds{{{r}}} {duration:.3f}"])
    lines += _block("recover_scan_timestamp_seconds", "When the last scan ended (Unix time).",
                    [f"recover_scan_timestamp_seconds{{{r}}} {ended:.3f}"])
    if outcome is None or info is None:
        return ("\n".join(lines) + "\n").encode()
    lines += _block("recover_info", "The layout and the daemon version judged, and how the version was told.",
                    [f"recover_info{{{_labels(root=root, **info)}}} 1"])
    lines += _block("recover_processes", "Processes in the state root, by verdict.",
                    [f"recover_processes{{{_labels(root=root, verdict=v)}}} {outcome.verdicts.get(v, 0)}"
                     for v in VERDICTS])

    def restart(o: Outcome) -> list[str]:
        return [f"{{{_labels(root=root, version=o.version, would=w, harm=o.harm_of(w))}}} {n}"
                for w, n in sorted(o.would.items())]

    lines += _block("recover_restart_processes", "Processes by what the daemon that will start would do to "
                    "them on its restart (harm: none, kill, lose-exit, leak, block, crash).",
                    [f"recover_restart_processes{s}" for s in restart(outcome)])
    if upgrades:
        lines += _block("recover_upgrade_processes", "The same, judged for the daemon version of an upgrade "
                        "(--upgrade-to).", [f"recover_upgrade_processes{s}" for o in upgrades for s in restart(o)])
    if outcome.dockerd:
        lines += _block("recover_dockerd_containers", "Docker's containers by what dockerd's restart would do.",
                        [f"recover_dockerd_containers{{{_labels(root=root, would=w)}}} {n}"
                         for w, n in sorted(outcome.dockerd.items())])
    lines += _block("recover_findings", "Findings of the last scan, by code and severity.",
                    [f"recover_findings{{{_labels(root=root, code=c, severity=s)}}} {n}"
                     for (c, s), n in sorted(outcome.findings.items())])
    lines += _block("recover_hazard", f"1 per container and hazard code of error severity (at most "
                    f"{HAZARD_SERIES_CAP} series).", [f"recover_hazard{{{_labels(root=root, container=k, code=c)}}} 1"
                                                      for k, c in sorted(outcome.hazards)])
    lines += _block("recover_hazards_truncated", "Hazard series left out over the cap.",
                    [f"recover_hazards_truncated{{{r}}} {outcome.hazards_left_out}"])
    return ("\n".join(lines) + "\n").encode()
