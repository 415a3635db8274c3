"""lawm service: the FastAPI app that serves an exported model.

    app.py settings.py deps.py errors.py   the app factory and lifespan, LAWM_* settings, what routes
                                           depend on, domain errors to HTTP (the one place)
    middleware.py auth.py metrics.py       request ids and body limits, bearer keys, Prometheus
    schemas.py inputs.py media.py          request/response bodies, reading them, upload limits
    kserve_protocol.py                     the KServe v2 wire format
    routes/      v1, jobs, kserve (/v2), console, health
    inference/   the engine (one batcher per component), batching and its queue, the planner and
                 rollouts (through a bridge from worker threads), caches, goal ids
    jobs/        job stores (in-process, Redis), runners, `lawm worker`, the transfer job
                 (both raise domain errors, never HTTP ones)
    bench/       load generation and `lawm bench serve|jobs`, with the processes they start
    cli.py startup.py                      `lawm serve|worker|bench ...`, and what runs before serving
    exporting.py                           a checkpoint's export in a child process, with its progress
"""
