from slimy_site.runall import build_children


def test_defaults_are_web_and_one_worker_process_serving_every_queue():
    children = build_children(host="127.0.0.1", port=8000)
    assert [c.name for c in children] == ["web", "worker-1"]
    worker = children[1]
    assert worker.argv[-4:] == ["rqworker", "chat", "database", "audit"]
    assert "--worker-class" not in worker.argv  # RQ_WORKER_CLASS: the runtime


def test_worker_processes_adds_processes_and_a_reconciler_only_when_the_workers_run_none():
    children = build_children(host="127.0.0.1", port=8000, processes=3, reconciler_process=True)
    assert [c.name for c in children] == ["web", "worker-1", "worker-2", "worker-3", "reconciler"]
    assert children[-1].argv[-2:] == ["queues_reconcile", "--loop"]
