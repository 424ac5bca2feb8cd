//! Abuse tests: files (filled in by the hardening work of issue 14).
