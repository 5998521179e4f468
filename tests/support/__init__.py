"""Test support: fault-injecting servers, a SIGKILL runner, output checks, a tiny model."""
