"""Tests written for the ML Test Score self-audit (docs/ml-test-score.md): checks of the
rubric that no other test module covered, and a check that the audit page itself is true."""
