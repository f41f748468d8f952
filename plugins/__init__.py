"""The built-in plugins, installed as `harness.plugins`: each module registers its encoders, datasets or evaluators
through the same hooks a third-party package implements (`harness.plugin_manager.BUILTIN_PLUGINS` lists them)."""
