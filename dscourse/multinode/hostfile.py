"""The DeepSpeed hostfile and the resource filters, with DeepSpeed's own semantics and clearer errors.

A hostfile names one node a line, MPI style::

    # comment
    worker-1 slots=8
    worker-2 slots=8

Mirrors ``deepspeed/launcher/runner.py`` of DeepSpeed 0.19.8:

- :func:`parse_hostfile` ↔ ``_parse_hostfile``: each stripped line is matched with ``re.search(r'^(\\S+)\\s+slots=(\\d+)')``;
  lines starting with ``#`` and empty lines are skipped; a repeated host, a line that does not match, and a file
  without any host are errors. Like DeepSpeed it accepts what follows the digits (``slots=8 # gpu`` and
  ``slots=8x`` both give 8) and ``slots=0``; :func:`lint_hostfile` reports those.
- :func:`resolve` ↔ ``parse_inclusion_exclusion`` + ``parse_resource_filter`` + ``apply_num_nodes_and_gpus``, and
  ``main()``'s rule that ``--num_nodes/--num_gpus`` cannot be combined with ``--include/--exclude``.

Rank order follows the hostfile's order: node 0 is the first host left after filtering, and its first slot is rank 0.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

PATTERN = re.compile(r"^(\S+)\s+slots=(\d+)")  # deepspeed/launcher/runner.py, _parse_hostfile


class HostfileError(ValueError):
    """A hostfile or filter DeepSpeed would refuse; the message is one line and says what to write."""


@dataclass(frozen=True)
class Lint:
    line: int
    text: str
    problem: str

    def __str__(self):
        return f"line {self.line}: {self.problem}"


def parse_hostfile(text: str) -> OrderedDict:
    """``{host: slots}`` in file order, exactly what DeepSpeed's ``_parse_hostfile`` returns, or HostfileError."""
    pool = OrderedDict()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or line == "":
            continue
        match = PATTERN.search(line)
        if not match:
            raise HostfileError(f"line {number}: {line!r} is not 'HOST slots=N' "
                                f"(write e.g. '{(line.split() or ['worker-1'])[0]} slots=8': one space, no spaces "
                                f"around '=', N = GPUs on that host)")
        host, slots = match.group(1), int(match.group(2))
        if host in pool:
            raise HostfileError(f"line {number}: host {host!r} appears twice (DeepSpeed refuses it): "
                                f"keep one line per host and put all its GPUs in slots=")
        pool[host] = slots
    if not pool:
        raise HostfileError("the hostfile names no host: write one 'HOST slots=N' line per node")
    return pool


def lint_hostfile(text: str) -> list[Lint]:
    """What DeepSpeed accepts but almost certainly is a mistake (it parses the file anyway)."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        match = PATTERN.search(line)
        if not match:
            continue
        rest = line[match.end():]
        if int(match.group(2)) == 0:
            found.append(Lint(number, line, f"{match.group(1)} has slots=0: DeepSpeed keeps the host with no rank; "
                                            f"remove the line or give its GPU count"))
        if rest and not rest[0].isspace():
            found.append(Lint(number, line, f"'slots={match.group(2)}{rest.split()[0]}': DeepSpeed reads "
                                            f"slots={match.group(2)} and ignores the rest; write a plain number"))
        elif rest.strip() and not rest.strip().startswith("#"):
            found.append(Lint(number, line, f"'{rest.strip()}' after slots= is ignored by DeepSpeed "
                                            "(max_slots= and other MPI keys mean nothing to it)"))
        if "@" in match.group(1) or ":" in match.group(1):
            found.append(Lint(number, line, f"host {match.group(1)!r} contains '@' or ':', which --include/--exclude "
                                            "use as separators: name the host in ~/.ssh/config instead"))
    return found


def _node_configs(spec: str) -> OrderedDict:
    """``NAME[:SLOT[,SLOT ...]][@NODE_SPEC ...]`` → ``{host: sorted unique slots}`` (``parse_node_config_list``)."""
    configs = OrderedDict()
    for node in spec.split("@"):
        if ":" in node:
            host, _, slots_text = node.partition(":")
            if ":" in slots_text:
                raise HostfileError(f"{node!r}: one ':' per host (NAME:SLOT,SLOT), e.g. 'worker-1:0,1'")
            try:
                slots = [int(s) for s in slots_text.split(",")]
            except ValueError:
                raise HostfileError(f"{node!r}: slots must be whole numbers separated by ',', "
                                    f"e.g. '{host}:0,1'") from None
        else:
            host, slots = node, []
        if not host:
            raise HostfileError(f"empty host name in {spec!r}: separate hosts with '@', e.g. 'worker-1@worker-2:0'")
        configs.setdefault(host, []).extend(slots)
    return OrderedDict((h, sorted(set(s))) for h, s in configs.items())


def resolve(pool: dict, include: str = "", exclude: str = "", num_nodes: int = -1,
            num_gpus: int = -1) -> OrderedDict:
    """The hosts and slots a launch uses: ``{host: [slot, ...]}`` in hostfile order (DeepSpeed's ``active_resources``)."""
    if (num_nodes >= 0 or num_gpus >= 0) and (include or exclude):
        raise HostfileError("--num_nodes/--num_gpus cannot be combined with --include/--exclude "
                            "(DeepSpeed: 'Cannot specify num_nodes/gpus with include/exclude'): use one kind")
    if include and exclude:
        raise HostfileError("--include and --exclude are mutually exclusive: use one of them")
    active = OrderedDict((host, list(range(n))) for host, n in pool.items())
    spec = include or exclude
    if spec:
        chosen = OrderedDict() if include else OrderedDict((h, list(s)) for h, s in active.items())
        for host, slots in _node_configs(spec).items():
            if host not in active:
                raise HostfileError(f"host {host!r} is not in the hostfile (hosts: {', '.join(active)})")
            for slot in slots:
                if slot not in active[host]:
                    raise HostfileError(f"{host} has no slot {slot} (slots=0..{len(active[host]) - 1} "
                                        f"per the hostfile)")
            if include:
                chosen[host] = slots if slots else active[host]
            elif slots:
                chosen[host] = [s for s in chosen[host] if s not in slots]
            else:
                chosen[host] = []
        active = OrderedDict((h, chosen[h]) for h in active if h in chosen and chosen[h])
    if num_nodes > 0:
        active = OrderedDict(list(active.items())[:num_nodes])
    if num_gpus > 0:
        active = OrderedDict((h, list(range(num_gpus))) for h in active)
    if not active:
        raise HostfileError("the filters leave no GPU to run on: check --include/--exclude against the hostfile")
    return active


def ranks(active: dict) -> list[tuple[int, str, int, int]]:
    """``(global rank, host, node rank, local rank)`` for every process, in DeepSpeed's order."""
    out, rank = [], 0
    for node_rank, (host, slots) in enumerate(active.items()):
        for local_rank, _slot in enumerate(slots):
            out.append((rank, host, node_rank, local_rank))
            rank += 1
    return out
