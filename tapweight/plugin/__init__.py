"""The plugin surface: hook specs, spec dataclasses, registries, the plugin manager, the core's built-ins."""
