//! Crash safety (an abrupt exit between the two Secret writes of a rotation) and leader
//! election (two replicas, one writes; kill the leader, the other takes over).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use vx11_controller::Vx11TokenSet;
use vx11_tests::eventually;
use vx11_tokenset::{TokenDigest, TokenState};

use crate::support::*;

const NS: &str = "crash";

fn tokenset() -> Vx11TokenSet {
    serde_json::from_value(json!({
        "apiVersion": "vx11.dev/v1alpha1",
        "kind": "Vx11TokenSet",
        "metadata": {"name": "set"},
        "spec": {
            "secretName": "svc",
            "clientSecretName": "client",
            "tokens": [{"name": "operator", "generate": {}}, {"name": "web", "generate": {}}],
            "rotation": {"gracePeriod": "10m"},
        },
    }))
    .unwrap()
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(&format!("{RELEASE}-controller"))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn crash_mid_rotation_loses_nothing_and_leader_election_fails_over() {
    let cluster = Cluster::start(&[NS]).await;
    let sets = cluster.sets(NS);
    let secrets = cluster.secrets(NS);

    // --- crash between the client write and the service write ---
    let mut first = cluster.controller("first", &[]);
    sets.create(&PostParams::default(), &tokenset())
        .await
        .unwrap();
    let before = eventually("issued", SETTLE, || async {
        let client = data(&get_secret(&secrets, "client").await?);
        let file = token_file(&get_secret(&secrets, "svc").await?);
        if client.len() == 2 && file.tokens.len() == 2 {
            Ok((client, file))
        } else {
            Err("not yet".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", first.logs()));
    first.sigkill();

    let mut crashing = cluster.controller("crashing", &[("VX11_CRASH_AT", "after-client-write")]);
    annotate_rotate(&sets, "set", "crash-test").await;
    let status = crashing
        .exited(SETTLE)
        .await
        .expect("the controller aborts at the crash point");
    assert!(!status.success());
    let (client_mid, file_mid) = (
        data(&get_secret(&secrets, "client").await.unwrap()),
        token_file(&get_secret(&secrets, "svc").await.unwrap()),
    );
    assert_ne!(
        client_mid["operator"], before.0["operator"],
        "the client Secret got the new values"
    );
    assert_eq!(
        file_mid, before.1,
        "the service Secret was not written before the crash"
    );

    // Restart: the rotation is finished from the client Secret's record, not repeated.
    let mut restarted = cluster.controller("restarted", &[]);
    let file = eventually("rotation finished after restart", SETTLE, || async {
        let file = token_file(&get_secret(&secrets, "svc").await?);
        if file.tokens.len() == 4 {
            Ok(file)
        } else {
            Err(format!("{} entries", file.tokens.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", restarted.logs()));
    let client_after = data(&get_secret(&secrets, "client").await.unwrap());
    assert_eq!(
        client_after, client_mid,
        "no second rotation: the values written before the crash stay"
    );
    for name in ["operator", "web"] {
        let entries: Vec<_> = file.tokens.iter().filter(|e| e.name == name).collect();
        assert_eq!(entries[0].state, TokenState::Active);
        assert_eq!(
            entries[0].sha256,
            TokenDigest::of(client_after[name].as_bytes())
        );
        assert_eq!(
            entries[1].state,
            TokenState::Retiring,
            "the old value is kept for the grace period"
        );
        assert_eq!(
            entries[1].sha256,
            TokenDigest::of(before.0[name].as_bytes())
        );
    }
    assert_eq!(
        file.generation,
        before.1.generation + 1,
        "one rotation, one generation"
    );
    restarted.sigkill();

    // --- SIGKILL at arbitrary moments of a rotation (no leader election, so restarts are
    // immediate): after each restart exactly one rotation has happened, nothing is lost ---
    for round in 0..6u64 {
        let before_values = data(&get_secret(&secrets, "client").await.unwrap());
        let before_file = token_file(&get_secret(&secrets, "svc").await.unwrap());
        let mut victim = cluster.controller(
            &format!("victim-{round}"),
            &[("VX11_LEADER_ELECTION", "false")],
        );
        eventually("victim running", SETTLE, || async {
            if victim.logs().contains("running without leader election") {
                Ok(())
            } else {
                Err("not yet")
            }
        })
        .await
        .unwrap();
        annotate_rotate(&sets, "set", &format!("kill-{round}")).await;
        // Spread the kills over the reconcile: before, between and after the two writes.
        tokio::time::sleep(Duration::from_millis(round * 25)).await;
        victim.sigkill();
        let mut survivor = cluster.controller(
            &format!("survivor-{round}"),
            &[("VX11_LEADER_ELECTION", "false")],
        );
        let file = eventually("rotation settled", SETTLE, || async {
            let file = token_file(&get_secret(&secrets, "svc").await?);
            if file.generation > before_file.generation
                && file.tokens.len() > before_file.tokens.len()
            {
                Ok(file)
            } else {
                Err(format!("generation {}", file.generation))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", survivor.logs()));
        let values = data(&get_secret(&secrets, "client").await.unwrap());
        assert_eq!(
            file.generation,
            before_file.generation + 1,
            "round {round}: exactly one rotation"
        );
        for name in ["operator", "web"] {
            let entries: Vec<_> = file.tokens.iter().filter(|e| e.name == name).collect();
            assert_eq!(
                entries[0].sha256,
                TokenDigest::of(values[name].as_bytes()),
                "round {round}: active = client value"
            );
            assert!(
                entries[1..].iter().any(|e| e.sha256
                    == TokenDigest::of(before_values[name].as_bytes())
                    && e.state == TokenState::Retiring),
                "round {round}: the previous value of {name} retires"
            );
        }
        survivor.sigkill();
    }

    // --- leader election: two replicas, one leads; kill it, the other takes over ---
    let leases: Api<Lease> = Api::namespaced(cluster.admin.clone(), RELEASE_NS);
    let mut a = cluster.controller("replica-a", &[]);
    // A takes over the Lease that the killed `restarted` still holds, after it expires.
    eventually("A leads", SETTLE, || async {
        match holder(&leases).await {
            Some(h) if h == "replica-a" => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.logs()));
    let mut b = cluster.controller("replica-b", &[]);
    eventually("b stands by", SETTLE, || async {
        if b.logs().contains("standing by") {
            Ok(())
        } else {
            Err("no standby log yet")
        }
    })
    .await
    .unwrap();
    // Only the leader reconciles: a rotation request is handled by A, B writes nothing.
    annotate_rotate(&sets, "set", "while-a-leads").await;
    eventually("A handled the request", SETTLE, || async {
        if a.logs().contains("token rotated") {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await
    .unwrap();
    assert!(
        !b.logs().contains("token rotated") && !b.logs().contains("Secrets written"),
        "the standby wrote"
    );

    let killed = Instant::now();
    a.sigkill();
    let lease_duration = Duration::from_secs(4);
    eventually("B takes over", lease_duration * 3, || async {
        match holder(&leases).await {
            Some(h) if h == "replica-b" => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.logs()));
    let takeover = killed.elapsed();
    eprintln!(
        "failover after SIGKILL of the leader: {takeover:?} (lease duration {lease_duration:?})"
    );
    // The standby waits one lease duration from the last renewal it saw, checking every
    // duration/5: at most duration + one retry period after the kill.
    // A margin for a loaded machine (the tests run in parallel).
    assert!(
        takeover <= lease_duration + lease_duration / 5 + Duration::from_secs(3),
        "{takeover:?}"
    );
    let client_before = data(&get_secret(&secrets, "client").await.unwrap());
    annotate_rotate(&sets, "set", "after-failover").await;
    eventually("B rotates", SETTLE, || async {
        let client = data(&get_secret(&secrets, "client").await?);
        if client["operator"] != client_before["operator"] {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.logs()));

    // SIGTERM releases the Lease at once.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(b.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = b
        .exited(Duration::from_secs(20))
        .await
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", b.logs());
    assert_eq!(holder(&leases).await, None, "Lease released");
}
