"""HTTP serving of online features (`skewless serve`): JSON over a raw ASGI app run by uvicorn.

`app.ServingApp(registry, redis_client, namespace)` is the app (tests and benchmarks build it
around a synthetic registry); `server.serve()` runs it for the project with uvicorn workers.
"""
