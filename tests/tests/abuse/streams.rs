//! Abuse tests: streams (filled in by the hardening work of issue 14).
