//! vx11 on a real node: the chart's pods run from the image made here on kubelet + containerd,
//! kubelet itself projects the Secrets, probes fire, Services route through kube-proxy and
//! kube-router enforces the NetworkPolicy.
//!
//! One node serves every test of this binary (a node takes ~15 s to start and one runs per
//! machine); the tests take turns on it. It is torn down when this process ends, however it
//! ends (`tests/node/node.sh`).

// Test code: a failed step fails the test (the workspace denies these outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/seed.rs"]
mod seed;

mod cases;
mod lifecycle;
mod metrics_policy;
mod network_policy;
mod rotation;
mod staged;
mod support;
