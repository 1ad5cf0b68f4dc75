//! Arbitrary bytes, and mutations of valid checkpoints, as MobileOne weights:
//! a typed error or a valid network/block, never a panic. A loaded block must
//! also run on a small input. The first byte picks what to load as.
#![no_main]

use libfuzzer_sys::fuzz_target;
use repconv::Tensor;
use repconv::mobileone::BlockConfig;
use repconv::weights::{LoadOptions, load_block_bytes, load_bytes};

/// The golden fixtures' block kinds (tests/fixtures/*.train|fused.safetensors).
fn block_config(kind: u8) -> BlockConfig {
    match kind % 6 {
        0 => BlockConfig::new(3, 48, 3).with_stride(2),
        1 => BlockConfig::new(48, 48, 3).with_groups(48).with_stride(2).with_branches(4),
        2 => BlockConfig::new(48, 48, 1).with_branches(4),
        3 => BlockConfig::new(48, 48, 3).with_groups(48).with_branches(4),
        4 => BlockConfig::new(48, 128, 1).with_branches(4),
        _ => BlockConfig::new(64, 64, 3).with_groups(64).with_branches(2).with_se(true),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    if selector >= 128 {
        // A whole network (any variant the tensors describe).
        let _ = load_bytes(bytes, &LoadOptions::default());
        return;
    }
    let config = block_config(selector);
    if let Ok(block) = load_block_bytes(bytes, config, 1e-5) {
        let x = Tensor::full([1, config.in_channels, 5, 6], 0.5).unwrap();
        block.forward(&x).expect("a loaded block runs on a valid input");
    }
});
