"""Scale out on Dask distributed: a suite's instances, a comparison's measurements and one instance's
branch-and-bound pieces run as tasks on a cluster's workers.

`cluster` starts a local cluster or connects to a scheduler; `executor` runs jobs with a watchdog over
their deadlines; `files` sends each model once and parses it once a worker; `suite_tasks` runs a
suite's instances; `pool` gives branch and bound a process pool's face over the cluster. Dask is an
optional dependency (`pip install 'verikit[dask]'`): nothing here imports it until it is used.
"""
