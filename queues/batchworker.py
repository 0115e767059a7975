"""Dotted path kept for settings and scripts: the batch worker is now the worker runtime.

`queues.batchworker.SlimyBatchWorker` runs short synchronous jobs inline in batches (one statement to
start a batch, one to complete it), like the runtime does by default: see queues.workers.runtime.
"""

from queues.workers.runtime import SlimyRuntimeWorker as SlimyBatchWorker  # noqa: F401
