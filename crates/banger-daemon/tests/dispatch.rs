//! The dispatch table covers exactly the protocol's methods.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::expect_used
)]

use banger_api::ErrorCode;
use banger_api::methods::ALL;
use banger_daemon::dispatch::dispatch;
use banger_daemon::stream::{StreamIn, StreamOut};
use banger_testkit::daemon::{TestBed, small_config};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn every_protocol_method_is_served_and_nothing_else() {
    let bed = TestBed::new(small_config()).unwrap();
    for name in ALL {
        // Params that no method accepts: each reaches its handler's decoder.
        let err = dispatch(
            &bed.daemon,
            name,
            Value::String("x".into()),
            StreamOut::discard(),
            StreamIn::none(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorCode::BadRequest, "{name}: {err:?}");
        assert!(
            err.message
                .starts_with(&format!("invalid params for {name}")),
            "{name}: {}",
            err.message
        );
    }
    let err = dispatch(
        &bed.daemon,
        "vm.nope",
        Value::Null,
        StreamOut::discard(),
        StreamIn::none(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorCode::UnknownMethod);
    assert!(err.data.hint.is_some());
}

/// Methods whose valid params would reach outside the test bed (the network, the host's
/// files, the daemon's life): their random params always carry an unknown field, so only
/// their decoders are exercised.
const OUTSIDE: &[&str] = &[
    "shutdown",
    "image.ensure",
    "image.pull.begin",
    "kernel.pull",
    "kernel.import",
    "vm.create",
    "vm.create.begin",
    "image.register",
    "image.export",
    "vm.workspace.prepare",
];

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let keys = prop::sample::select(vec![
        "name",
        "names",
        "image",
        "vcpu",
        "memory_mib",
        "disk_size",
        "nat",
        "argv",
        "env",
        "cwd",
        "tty",
        "rows",
        "cols",
        "timeout_secs",
        "stdin",
        "tail",
        "follow",
        "source",
        "op_id",
        "seen",
        "wait_ms",
        "reference",
        "path",
        "base_commit",
        "labels",
        "no_start",
        "guest_path",
        "dry_run",
        "output",
        "all",
        "older_than",
        "x",
    ])
    .boxed();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..100).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "x",
            "../..",
            "/",
            "-1",
            "console",
            "vmm",
            "debian-bookworm",
            "\u{0}",
            "💥",
            "stdin",
            "vm-1",
            "nope",
        ])
        .prop_map(Value::from),
        "[a-z0-9 ./-]{0,80}".prop_map(Value::from),
    ]
    .boxed();
    fn object(
        keys: BoxedStrategy<&'static str>,
        inner: BoxedStrategy<Value>,
        n: usize,
    ) -> BoxedStrategy<Value> {
        prop::collection::btree_map(keys, inner, 0..n)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
            .boxed()
    }
    let deep = leaf.clone().prop_recursive(3, 24, 5, {
        let keys = keys.clone();
        move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                object(keys.clone(), inner, 6),
            ]
        }
    });
    // Mostly small objects of plausible fields (they get past the decoders and reach the
    // services), sometimes anything.
    let names = prop::collection::vec(
        prop::sample::select(vec!["x", "vm-1", "", "nope", "Bad_Name"]).prop_map(Value::from),
        0..3,
    )
    .prop_map(Value::Array);
    let field = prop_oneof![3 => leaf, 1 => names].boxed();
    prop_oneof![
        1 => deep,
        4 => object(keys, field, 3),
    ]
}

#[test]
fn random_params_for_every_method_never_crash_or_hang_the_daemon() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bed = rt.block_on(async { TestBed::new(small_config()).unwrap() });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    });
    let strategy = (prop::sample::select(ALL.to_vec()), json_value());
    // Calls that got past their params' decoder (answered, or refused by the service).
    let decoded = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |(method, mut params)| {
            if OUTSIDE.contains(&method) {
                params = serde_json::json!({ "unknown_field": params });
            }
            let call = dispatch(
                &bed.daemon,
                method,
                params.clone(),
                StreamOut::discard(),
                StreamIn::none(),
            );
            let answered = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), call).await
            });
            let streams = banger_api::methods::STREAMING.contains(&method)
                || banger_api::methods::DUPLEX.contains(&method);
            prop_assert!(
                answered.is_ok() || streams,
                "{method} {params} did not answer in 10 s"
            );
            let past_decoder = match &answered {
                Ok(Err(e)) => !e.message.starts_with("invalid params"),
                _ => true,
            };
            if past_decoder {
                decoded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if let Ok(Err(e)) = answered {
                prop_assert!(!e.message.is_empty(), "{method}: empty error");
                prop_assert!(
                    e.kind() != ErrorCode::OperationFailed || !OUTSIDE.contains(&method),
                    "{method} {params}: {e:?}"
                );
            }
            Ok(())
        })
        .unwrap();
    let decoded = decoded.into_inner();
    eprintln!("{decoded} of 2000 random calls got past their decoder");
    assert!(decoded > 80, "the generator must reach the services too");
    // Still serving.
    let ping = rt
        .block_on(dispatch(
            &bed.daemon,
            "ping",
            Value::Null,
            StreamOut::discard(),
            StreamIn::none(),
        ))
        .unwrap();
    assert!(ping["pid"].is_u64());
}
