//! The harness's own tests, not vx11's: that the control plane (etcd + kube-apiserver, +
//! kube-controller-manager where needed), built from Go modules by
//! `tests/controlplane/build.sh`, behaves as Kubernetes does (CRD schema and CEL, garbage
//! collection, RBAC, helm and kubectl, kubelet's Secret projection). One binary, so the
//! tests share one link step; each test starts its own control plane, and they run in
//! parallel. vx11's own end-to-end tests are `e2e*.rs`, `services.rs` and `kind.rs`.

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crd_cel;
mod garbage_collection;
mod helm_kubectl;
mod kubelet_projection;
mod rbac;
mod support;
