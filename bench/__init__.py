"""On-demand benchmarks: `python -m bench` runs them all and prints each against a reference
measured side by side in the same run. Never part of the test suite."""
