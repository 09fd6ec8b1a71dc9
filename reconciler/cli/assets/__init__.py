"""Files that `cohortsync demo` and `cohortsync init` write out, shipped inside the wheel.

`cohorts`, `cohortsync.yaml` and `workflows` are symlinks to the repository's own examples and
deploy/github, so a clone and the wheel hold the same files and nobody keeps two copies; `init/`
holds what only a new cohorts repository needs.
"""
