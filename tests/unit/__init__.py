"""Fast tests of pure functions: no process, no network; `./run test -m "not stack"` runs them in seconds."""
