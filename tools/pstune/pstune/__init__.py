"""pstune: hyper-parameter search on a running pskit shard cluster.

Each trial trains in its own namespace with W ps-worker processes (or a
Python worker command) and one evaluator; Optuna chooses the configurations
(random, TPE, CMA-ES, NSGA-II, or the Gaussian-process sampler in
pstune.gp_sampler) and prunes poor trials from the evaluations the shards
hold. Modules: space (the search-space file), runner (the search loop), cli
(the command line: `pstune --help`), gp_sampler and report.
"""

__all__ = ["space", "runner", "cli"]
