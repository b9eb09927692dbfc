"""Periodic jobs: the scheduler any number of workers run at once (runtime.scheduler.loop),
its Redis side (runtime.scheduler.state, fire.lua) and where schedules are declared
(runtime.scheduler.config); the rules themselves are in runtime.schedule."""
