"""The model behind the API: the engine and its batchers, the planner, rollouts and caches.

Nothing here knows HTTP: refusals are `service.inference.errors`, answered by `service.errors`.
"""
