"""A stand-in for ``ssh`` for the course's simulated cluster and the tests (never for a real cluster).

    DSCOURSE_FAKESSH='{"node0": "ip netns exec dscourse-ab12cd-n0", "node1": "", "worker-9": "deny"}' \\
        python -m dscourse.multinode.fakessh -o BatchMode=yes -o ConnectTimeout=5 -T node0 'hostname'

It takes ssh's command line (options, host, command) and, per host, from the JSON map in ``DSCOURSE_FAKESSH``:

- ``{"run": PREFIX, "address": ADDR}``: as PREFIX, and ``ssh -G`` reports ``hostname ADDR`` (default 127.0.0.1
  for every host in the map, as if ``~/.ssh/config`` had a ``HostName`` for it);
- a command prefix (``""`` = this machine, ``"ip netns exec NS"`` = a network namespace): runs the command
  there with ``sh -c``, like sshd would;
- ``"deny"``, ``"refuse"``, ``"hostkey"``: prints what OpenSSH prints in that case and exits 255;
- ``"hang"``: never answers (sleeps), like a firewall that drops packets;
- ``"probe:{...}"``: answers the preflight probe with that JSON (a node with other versions);
- hosts not in the map: "Could not resolve hostname", exit 255.

``-G host`` prints ``hostname host``, as ``ssh -G`` does.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

OPTS_WITH_VALUE = set("BbcDEeFIiJLlmOoPpQRSWw")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    config = False
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag = argv[i]
        if flag == "-G":
            config = True
        if len(flag) == 2 and flag[1] in OPTS_WITH_VALUE:
            i += 1
        i += 1
    if i >= len(argv):
        print("usage: ssh [options] destination [command]", file=sys.stderr)
        return 255
    host, command = argv[i], " ".join(argv[i + 1:])
    hosts = json.loads(os.environ.get("DSCOURSE_FAKESSH", "{}"))
    how = hosts.get(host)
    address = None
    if isinstance(how, dict):
        how, address = how.get("run", ""), how.get("address")
    if config:  # like a 'Host' block with a 'HostName' in ~/.ssh/config
        print(f"hostname {address or ('127.0.0.1' if how is not None else host)}\nport 22")
        return 0
    if how is None:
        print(f"ssh: Could not resolve hostname {host}: Name or service not known", file=sys.stderr)
        return 255
    if how == "deny":
        print(f"root@{host}: Permission denied (publickey,password).", file=sys.stderr)
        return 255
    if how == "refuse":
        print(f"ssh: connect to host {host} port 22: Connection refused", file=sys.stderr)
        return 255
    if how == "hostkey":
        print("No ED25519 host key is known for " + host + " and you have requested strict checking.\n"
              "Host key verification failed.", file=sys.stderr)
        return 255
    if how == "hang":
        time.sleep(3600)
        return 255
    if how.startswith("probe:"):
        print("DSCOURSE-PROBE " + how[len("probe:"):])
        return 0
    return subprocess.run([*shlex.split(how), "sh", "-c", command]).returncode


if __name__ == "__main__":
    sys.exit(main())
