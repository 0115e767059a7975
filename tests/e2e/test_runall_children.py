from slimy_site.runall import build_children


def test_thread_worker_queues_get_one_process_with_their_concurrency_as_threads():
    children = build_children(
        host="127.0.0.1", port=8000, concurrency={"chat": 5, "database": 3, "audit": 2},
        worker_classes={"chat": "queues.threadworker.SlimyThreadWorker",
                        "database": "queues.batchworker.SlimyBatchWorker"},
    )
    by_name = {c.name: c for c in children}
    chat = [c for c in children if "chat" in c.name]
    assert [c.name for c in chat] == ["worker-chat"] and chat[0].env == {"WORKER_THREADS": "5"}
    assert "queues.threadworker.SlimyThreadWorker" in chat[0].argv
    assert sum(1 for name in by_name if name.startswith("worker-database-")) == 3
    assert "queues.batchworker.SlimyBatchWorker" in by_name["worker-database-1"].argv
    audit = [c for c in children if c.name.startswith("worker-audit-")]
    assert len(audit) == 2 and "--worker-class" not in audit[0].argv
    assert {"web", "reconciler"} <= set(by_name)
