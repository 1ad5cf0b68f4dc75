//! A batch spread over threads by images, inside layers, or both, gives the
//! same logits bit for bit as running each image alone on one thread.

use repconv::Tensor;
use repconv::mobileone::{BatchSplit, MobileOne, MobileOneConfig, Variant, Workspace};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

/// Each image of `x` alone, on one thread.
fn one_by_one(model: &MobileOne, x: &Tensor) -> Vec<u32> {
    let [n, c, h, w] = x.shape();
    let mut bits = Vec::new();
    pool(1).install(|| {
        for img in x.as_slice().chunks(c * h * w) {
            let xi = Tensor::from_vec([1, c, h, w], img.to_vec()).unwrap();
            let y = model.forward(&xi).unwrap();
            bits.extend(y.as_slice().iter().map(|v| v.to_bits()));
        }
    });
    assert_eq!(bits.len(), n * model.config().num_classes);
    bits
}

#[test]
fn every_split_and_thread_count_matches_images_run_alone() {
    let config = MobileOneConfig::variant(Variant::S0).with_num_classes(7);
    let multi = MobileOne::random(config, 11).unwrap();
    let fused = multi.reparameterize().unwrap();
    let mut rng = repconv::mobileone::SplitMix64::new(5);
    let x = Tensor::from_vec([5, 3, 40, 36], rng.uniform_vec(5 * 3 * 40 * 36, -1.0, 1.0)).unwrap();
    for (form, model) in [("multi-branch", &multi), ("fused", &fused)] {
        let want = one_by_one(model, &x);
        assert!(want.iter().any(|&b| b != want[0]), "{form}: logits must differ");
        for split in [BatchSplit::Auto, BatchSplit::Images, BatchSplit::WithinImage] {
            let model = model.clone().with_batch_split(split);
            for threads in [1, 2, 3] {
                let mut ws = Workspace::new();
                let mut y = Tensor::zeros([5, 7, 1, 1]).unwrap();
                pool(threads).install(|| {
                    // Twice with one workspace: the second run reuses it.
                    for _ in 0..2 {
                        y.as_mut_slice().fill(f32::NAN);
                        model.forward_into(x.view(), y.view_mut(), &mut ws).unwrap();
                        let got: Vec<u32> = y.as_slice().iter().map(|v| v.to_bits()).collect();
                        assert_eq!(got, want, "{form}, {split:?}, {threads} threads");
                    }
                });
            }
        }
    }
}

#[test]
fn a_bad_image_shape_is_an_error_under_every_split() {
    let config = MobileOneConfig::variant(Variant::S0).with_num_classes(3);
    let model = MobileOne::random(config, 1).unwrap().reparameterize().unwrap();
    for split in [BatchSplit::Auto, BatchSplit::Images, BatchSplit::WithinImage] {
        let model = model.clone().with_batch_split(split);
        let x = Tensor::zeros([4, 2, 32, 32]).unwrap(); // 2 channels, not 3
        let mut y = Tensor::zeros([4, 3, 1, 1]).unwrap();
        let r =
            pool(2).install(|| model.forward_into(x.view(), y.view_mut(), &mut Workspace::new()));
        assert!(r.is_err(), "{split:?}");
    }
}
