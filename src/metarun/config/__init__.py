"""The configuration: its schema (schema), Hydra's store of it (store), the value checks (checks) and
what may differ when a run continues (resume). No module here imports torch: `metarun --help`, `--cfg job`
and tab completion load them."""
