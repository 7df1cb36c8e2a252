//! Catalog bundles: arbitrary bytes as an image or kernel bundle (tar + zstd), unpacked
//! into a temporary directory; only the allowed regular files may appear, and only there.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.tar.zst");
    std::fs::write(&bundle, data).unwrap();
    for kernel in [false, true] {
        let dest = dir.path().join(if kernel { "k" } else { "i" });
        std::fs::create_dir(&dest).unwrap();
        let _ = if kernel {
            banger_image::bundle::unpack_kernel(&bundle, &dest).map(drop)
        } else {
            banger_image::bundle::unpack_image(&bundle, &dest).map(drop)
        };
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["b.tar.zst", "i", "k"],
        "a bundle wrote outside its directory"
    );
});
