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
