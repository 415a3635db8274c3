"""Benchmark harness of the service: open-loop load (`loadgen`), `lawm bench serve` (`serve`),
`lawm bench jobs` (`jobs`), and the processes they start (`processes`, `redis_server`, `cluster`)."""
