"""Observability middleware and tools for runtime: timing, logs (and, to come, tracing,
profiles, memory, Sentry, metrics). Each feature is one runtime.middleware.Middleware."""
