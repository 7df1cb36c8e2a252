//! What a registry sends: image index and manifest JSON (oci-client's types, as banger
//! reads them), the image config (run config + diff ids, platform check), references and
//! docker credentials.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<oci_client::manifest::OciManifest>(data);
    let _ = serde_json::from_slice::<oci_client::manifest::OciImageIndex>(data);
    let _ = banger_image::registry::parse_config(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = banger_image::registry::parse_ref(text, false) {
            let _ = banger_image::registry::default_name(&r.reference);
        }
        let _ = banger_image::registry::docker_auth(text, "registry.example");
        let _ = banger_image::registry::compression(text);
    }
});
