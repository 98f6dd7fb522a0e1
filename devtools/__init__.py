"""Dev-only tooling beside the services: the local stack (`make run`), private servers for
tests and benchmarks, and the benchmarks. Nothing in `shared/` or `services/` imports it
at run time (the `insa` command imports it inside its dev-only subcommands)."""
