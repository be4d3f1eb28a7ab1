"""Tests of the emulator (package, so test module names do not clash with tests/clients)."""
