"""Topology and launch: placement groups, resource plans, job entry points, cluster config files."""
