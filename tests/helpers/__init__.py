"""What several test files share: the tiny training setup and its runs (training.py), stand-in
checkpoints of other frameworks (foreign_checkpoints.py, also run by docs/other_frameworks.md), and
the user modules that register components the way a researcher's own module would (user_hooks.py,
user_compression.py). The "run a tool" helper is tests/conftest.py's run_tool."""
