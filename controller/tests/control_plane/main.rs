//! `vx11-controller` on a real control plane (etcd + kube-apiserver from `vx11-tests`),
//! running as the chart's ServiceAccount with the chart's RBAC. One binary, so the tests share
//! one link step; each test starts its own control plane.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod cel;
mod crash_and_leader;
mod lifecycle;
mod metrics;
mod rbac;
mod support;
mod token_source;
