"""What the product's processes use, read from /proc: peak memory and CPU time, each
process by name (the launcher's children: services.<name> and nats-server), and
PostgreSQL's backends together."""
from __future__ import annotations

import os
from pathlib import Path

POSTGRESQL = "PostgreSQL (its backends)"


def peak_kib(pid: int) -> int:
    """VmHWM: the peak resident set of a live process, KiB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commands() -> dict[int, tuple[int, list[bytes]]]:
    """Every live process: pid → (parent pid, command line)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        found[int(stat.parent.name)] = (parent, command)
    return found


def product_processes(root_pid: int) -> dict[str, int]:
    """The processes under the launcher `root_pid`, by name: nats-server, or the module
    a Python process runs (the last argument of `python -m services.<name>`)."""
    commands = _commands()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in commands.items():
        children.setdefault(parent, []).append(pid)
    named, todo = {}, list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        command = commands[pid][1]
        if b"nats-server" in command[0]:
            named["nats-server"] = pid
            continue
        last = command[-2] if command[-1] == b"" and len(command) > 1 else command[-1]
        named[last.decode()] = pid
    return named


def peak_memory(root_pid: int) -> dict[str, int]:
    """VmHWM (peak resident set, KiB) of each process under the launcher."""
    return {name: peak_kib(pid) for name, pid in product_processes(root_pid).items()}


def cpu_by_process(root_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each process under the launcher, and by PostgreSQL's
    live backends together (the product's pooled connections live as long as it does)."""
    used = {name: cpu_seconds(pid) for name, pid in product_processes(root_pid).items()}
    backends = [pid for pid, (_, command) in _commands().items() if command[0].startswith(b"postgres: ")]
    used[POSTGRESQL] = sum(cpu_seconds(pid) for pid in backends)
    return used


def cpu_per_item(before: dict[str, float], after: dict[str, float], items: int) -> list[tuple[str, float]]:
    """CPU seconds per item each process spent between two readings, most first."""
    spent = [(name, (after[name] - before.get(name, 0.0)) / items) for name in after]
    return sorted(spent, key=lambda pair: -pair[1])
