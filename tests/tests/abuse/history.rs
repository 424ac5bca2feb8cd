//! Abuse tests: history (filled in by the hardening work of issue 14).
