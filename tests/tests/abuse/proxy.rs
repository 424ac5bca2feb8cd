//! Abuse tests: proxy (filled in by the hardening work of issue 14).
