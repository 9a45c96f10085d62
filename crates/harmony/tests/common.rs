//! Shared by the Harmony tests: the real o200k_harmony tokenizer.

use std::sync::OnceLock;

use mlx_harmony_format::HarmonyEncoding;

pub fn tokenizer_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tokenizers/o200k_harmony/tokenizer.json")
}

/// Loaded once per test binary (it is 12 MB).
pub fn encoding() -> &'static HarmonyEncoding {
    static ENCODING: OnceLock<HarmonyEncoding> = OnceLock::new();
    ENCODING.get_or_init(|| {
        HarmonyEncoding::from_file(tokenizer_path()).unwrap_or_else(|err| {
            panic!("{err}\nBuild the test tokenizers first: scripts/test does, or run scripts/make-test-tokenizers")
        })
    })
}
