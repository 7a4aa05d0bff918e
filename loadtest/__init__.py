"""The load-test and benchmark harness."""
