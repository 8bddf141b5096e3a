"""The core: errors, reserved ids, run directories and their atomic writes, the runtime, and the configuration (schema, composition, overrides, names).

Each module imports only from floors below this one (docs/architecture.md)."""
