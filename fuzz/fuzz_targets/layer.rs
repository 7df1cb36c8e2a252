//! Layer flattening: an arbitrary (uncompressed) tar stream unpacked into a temporary root.
//! Refusals are fine; a panic, or a file written outside the root, is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let _ = banger_image::layers::apply_layer(&root, "fuzz", digest, data);
    // Nothing escapes the root: the temp dir holds only `root`.
    let names: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["root"], "a layer wrote outside its root");
});
