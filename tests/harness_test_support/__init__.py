"""Helpers of the test-suite, one package with a name no installed distribution uses.

It lives in tests/ and is importable because pytest puts tests/ (and only tests/) on sys.path: `pythonpath` in
pyproject.toml's [tool.pytest.ini_options]. The repository root never goes on sys.path: its harness/ folder would
shadow the installed `harness`, and `harness.plugins` (the repository's plugins/ folder) would then not import.

    helpers             test doubles: CountingPixels, EncoderPlugin
    plugin_packages     real plugin packages written to disk, pip-installed into a private folder, run by subprocess
    browser             headless Chromium for the site tests (the `open_page` fixture, a pytest plugin)
    fault_worker        run as a script by tests/test_faults.py
    distributed_worker  run as a script under torchrun by tests/test_distributed.py
"""
