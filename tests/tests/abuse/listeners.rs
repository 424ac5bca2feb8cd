//! Abuse tests: listeners (filled in by the hardening work of issue 14).
