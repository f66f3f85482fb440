"""Tuning: Optuna studies per grid cell, run by parallel workers that share one storage.

A sweep's ``tune:`` section names a search space over dotted run-config keys, and the grid
axes that get a study of their own (``per``)::

    tune:
      space:
        optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
        selection.temperature: {type: float, low: 0.3, high: 3.0}
      per: [learner.size, selection.policy]
      trials: 20
      workers: 4

``activescale tune SWEEP.yaml`` creates one study per distinct combination of the ``per`` axes
(named ``SWEEP/learner.size=s/selection.policy=iid``; the sweep's other axes take their first
value) and starts ``workers`` processes, here or as a SLURM job array, that all work through
every study on one storage. A trial trains the study's run config with the suggested values
and maximises the test accuracy; every evaluation (log-spaced in FLOPs) reports the accuracy
to the pruner. With ``from_tuning: true`` the main sweep's runs take their study's best values
before their run ids are computed, so the values are part of each run's config and params.

Storage: a file path (default ``WORKDIR/tune/optuna.journal``) is an Optuna journal file, safe
for many processes on one machine or a shared file system; a URL (``sqlite:///...`` for one
process, ``postgresql+psycopg2://...`` for many nodes) is an RDBStorage with heartbeats: a
worker that dies mid-trial stops beating, its trial is failed after ``grace_period`` seconds
and retried (``RetryFailedTrialCallback``), so the study still reaches its trial count.

Modules: ``config`` (the ``tune:`` section and its checks against the sweep), ``studies``
(storages, studies, results, applying the best values), ``worker`` (what a tuning worker
process runs: trials), ``command`` (`activescale tune`: workers through the sweep's executor).
This package file imports none of them, so importing one does not import the rest.
"""
