"""Worker side of Slimy.

- `runtime`: the default worker (`manage.py rqworker chat database audit`): one loop serving every queue
  it is given, each at its own concurrency (slots), with three executors (executors.py) and the
  process's heartbeat and reconciler (liveness.py).
- `forking`: RQ's forking worker with the ledger's additions, for jobs that need a process of their own,
  and the in-process `SlimySimpleWorker` the tests use.

Import the classes from their modules (or the dotted paths in queues.worker); nothing is imported here,
so that loading one does not load the others.
"""
