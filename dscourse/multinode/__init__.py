"""Multi-node training without the hangs: hostfile parsing, launcher commands, a preflight check.

Pure Python, no torch import:

- :mod:`.hostfile`: the hostfile and ``--include/--exclude/--num_nodes/--num_gpus``, with the semantics of
  DeepSpeed 0.19.8's own ``deepspeed/launcher/runner.py`` (``_parse_hostfile``, ``parse_resource_filter``,
  ``parse_inclusion_exclusion``, ``apply_num_nodes_and_gpus``), and one-line errors that say what to write;
- :mod:`.commands`: nodes × GPUs × launcher → the exact command for every node, validated;
- :mod:`.preflight`: ``python -m dscourse.multinode preflight``: syntax, name resolution, non-interactive SSH,
  master port, launcher backend and versions on every node, each failure with its fix; never hangs;
- :mod:`.netns`: two "hosts" with their own addresses on one machine (network namespaces), for the real run.
"""
