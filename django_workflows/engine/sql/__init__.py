"""The hand-written SQL of the engine: the instance lock and the chained-step fast path.

Each module builds its statements from the models' ``_meta`` once per connection."""
