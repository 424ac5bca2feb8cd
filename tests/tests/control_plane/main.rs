//! Tests on a real control plane (etcd + kube-apiserver, + kube-controller-manager where
//! needed), built from Go modules by `tests/controlplane/build.sh`. One binary, so the tests
//! share one link step; each test starts its own control plane, and they run in parallel.

mod crd_cel;
mod garbage_collection;
mod helm_kubectl;
mod kubelet_projection;
mod rbac;
mod support;
