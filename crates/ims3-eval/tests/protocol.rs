//! The evaluation protocols on small synthetic sets: schedules and constants as the
//! references compute them, a short hard-label run that learns, a soft-label run that learns
//! from a teacher, and the errors of bad folders.

use burn::prelude::*;
use ims3_eval::*;
use ims3_images::pil::Rgb8;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Two classes a network can only tell apart by layout: a bright left half or a bright
/// top half, with pixel noise.
fn synthetic(n_per_class: usize, seed: u64) -> ImageSet {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut set = ImageSet { classes: vec!["left".into(), "top".into()], ..Default::default() };
    for k in 0..2 {
        for _ in 0..n_per_class {
            let (w, h) = (40, 40);
            let mut data = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                for x in 0..w {
                    let on = if k == 0 { x < w / 2 } else { y < h / 2 };
                    let base: i32 = if on { 190 } else { 60 };
                    for _ in 0..3 {
                        data.push((base + rng.random_range(-40..40)).clamp(0, 255) as u8);
                    }
                }
            }
            set.images.push(Rgb8 { width: w, height: h, data });
            set.labels.push(k);
        }
    }
    set
}

#[test]
fn schedule_and_epochs_follow_the_reference() {
    assert_eq!((epochs_for_ipc(1), epochs_for_ipc(10), epochs_for_ipc(50), epochs_for_ipc(100)), (3000, 2000, 1500, 1000));
    assert_eq!((epochs_for_ipc(200), epochs_for_ipc(201), epochs_for_ipc(500), epochs_for_ipc(900)), (1000, 500, 500, 300));
    // ImageNet-100: 2/3 of the epochs, in hundreds (IPC 10: 1333 -> 1300).
    assert_eq!((epochs_for(10, 100), epochs_for(10, 10), epochs_for(1, 100)), (1300, 2000, 2000));
    let cfg = EvalConfig::reference(NetKind::ResnetAp10, 224, 10);
    assert_eq!(cfg.eval_every, 20);
    assert_eq!(cfg.schedule, LrSchedule::MultiStep { milestones: vec![1333, 1666], gamma: 0.2 });
    assert_eq!(cfg.lr_at(0), 0.1);
    assert_eq!(cfg.lr_at(1332), 0.1);
    assert!((cfg.lr_at(1333) - 0.02).abs() < 1e-12);
    assert!((cfg.lr_at(1666) - 0.004).abs() < 1e-12);
    // IPC 1: 3000 epochs. In floats 2/3 * 3000 is 1999.99..., which truncates to 1999;
    // the reference's integers give 2000.
    let one = EvalConfig::reference(NetKind::ResnetAp10, 224, 1);
    assert_eq!(one.schedule, LrSchedule::MultiStep { milestones: vec![2000, 2500], gamma: 0.2 });
    assert_eq!(one.lr_at(1999), 0.1);
    assert_eq!(EvalConfig::reference(NetKind::ResnetAp10, 224, 10).with_epochs(100).schedule, LrSchedule::MultiStep { milestones: vec![66, 83], gamma: 0.2 });
    assert_eq!("convnet4".parse::<NetKind>().unwrap(), NetKind::ConvNet { depth: 4 });
    assert_eq!("ConvNet-4".parse::<NetKind>().unwrap().id(), "convnet4");
    for bad in ["vgg", "convnet", "convnetx", "convnet7", "convnet0"] {
        assert!(bad.parse::<NetKind>().is_err(), "{bad}");
    }
    assert_eq!(mean_std(&[1.0, 2.0, 3.0]), (2.0, 1.0));
}

#[test]
fn a_short_run_learns_the_synthetic_task() {
    let device = Device::flex();
    let train = synthetic(24, 1);
    let test = synthetic(20, 2);
    let mut cfg = EvalConfig::reference(NetKind::ConvNet { depth: 3 }, 32, 10).with_epochs(8);
    cfg.eval_every = 4;
    cfg.batch_size = 16;
    cfg.lr = 0.01;
    cfg.convnet_width = 16;
    let r = train_and_eval(EvalSets { train: &train, test: &test, val: Some(&test) }, &cfg, None, 0, &device, None).unwrap();
    assert!(r.last_epoch_loss < r.first_epoch_loss, "loss {} -> {}", r.first_epoch_loss, r.last_epoch_loss);
    assert!(r.final_top1 >= 80.0, "final top-1 {}", r.final_top1);
    assert_eq!(r.curve.iter().map(|c| c.0).collect::<Vec<_>>(), vec![4, 8]);
    assert!(r.best_top1.unwrap() >= r.final_top1);
    assert!(r.val_selected_top1.is_some() && r.val_best_epoch.is_some());
    assert!(r.curve.iter().all(|c| c.1.is_some() && c.2.is_some()));
    // Testing after the last epoch only: the same training, the test split read once.
    let mut once = cfg.clone();
    once.test_at = ims3_eval::TestAt::Final;
    let f = train_and_eval(EvalSets { train: &train, test: &test, val: Some(&test) }, &once, None, 0, &device, None).unwrap();
    assert_eq!(f.final_top1, r.final_top1);
    assert_eq!(f.curve.iter().map(|c| (c.0, c.1.is_some(), c.2)).collect::<Vec<_>>(), r.curve.iter().map(|c| (c.0, c.0 == 8, c.2)).collect::<Vec<_>>());
    assert_eq!((f.best_top1, f.val_selected_top1, f.val_best_epoch), (None, None, r.val_best_epoch));
    // Same seed, same result.
    let again = train_and_eval(EvalSets { train: &train, test: &test, val: None }, &cfg, None, 0, &device, None).unwrap();
    assert_eq!(again.final_top1, r.final_top1);
    assert_eq!(again.last_epoch_loss, r.last_epoch_loss);
}

#[test]
fn folder_with_other_classes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["a", "b", "z"] {
        std::fs::create_dir_all(dir.path().join(c)).unwrap();
    }
    let img = image::RgbImage::new(4, 4);
    img.save(dir.path().join("a/0.png")).unwrap();
    let e = ImageSet::read(dir.path(), &["a".into(), "b".into()]).unwrap_err().to_string();
    assert!(e.contains("no images for classes b"), "{e}");
    img.save(dir.path().join("b/0.png")).unwrap();
    let e = ImageSet::read(dir.path(), &["a".into(), "b".into()]).unwrap_err().to_string();
    assert!(e.contains("not in the test set's classes: z"), "{e}");
    let e = ImageSet::read(dir.path(), &["a".into(), "q".into()]).unwrap_err().to_string();
    assert!(e.contains("no folder for classes q"), "{e}");
}

#[test]
fn soft_protocol_constants_follow_rded() {
    let soft = SoftLabels { teacher: "t.pth".into(), classes: vec![193, 182], temperature: 20.0 };
    let cfg = EvalConfig::soft(NetKind::Resnet18, 224, 10, 10, soft.clone());
    assert_eq!((cfg.epochs, cfg.batch_size, cfg.lr), (300, 50, 1e-3));
    assert_eq!(cfg.optimizer, Optimizer::AdamW { weight_decay: 0.01 });
    assert_eq!(cfg.labels, Labels::Soft(soft));
    assert_eq!(cfg.test_transform, ims3_augment::TestTransform::Resize8of7CenterCrop);
    // Half cosine: 1 at the start, 0.5 at the end (never 0).
    assert_eq!(cfg.lr_at(0), 1e-3);
    assert!((cfg.lr_at(150) - 1e-3 * 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-15);
    assert!(cfg.lr_at(299) > 0.5e-3);
    assert_eq!((soft_batch_size(1, 10), soft_batch_size(10, 10), soft_batch_size(50, 10), soft_batch_size(10, 100), soft_batch_size(1, 5)), (10, 50, 100, 100, 5));
}

/// The teacher of the fixture (torchvision ResNet-18 layout, random weights) restricted to two
/// of its classes labels a short run; the student's KL loss falls and the run repeats exactly.
#[test]
fn soft_labels_from_a_teacher_train_the_student() {
    let device = Device::flex();
    let case = ims3_fixtures::case_of_kind("resnet18_torchvision");
    let soft = SoftLabels { teacher: case.dir.join("weights.pth"), classes: vec![7, 3], temperature: 4.0 };
    let teacher = Teacher::load(&soft, &device).unwrap();
    let (train, test) = (synthetic(8, 1), synthetic(4, 2));
    let mut cfg = EvalConfig::soft(NetKind::ConvNet { depth: 3 }, 32, 8, 2, soft.clone()).with_epochs(6);
    cfg.convnet_width = 8;
    cfg.batch_size = 8;
    cfg.lr = 0.01;
    let sets = EvalSets { train: &train, test: &test, val: None };
    let r = train_and_eval(sets, &cfg, Some(&teacher), 0, &device, None).unwrap();
    assert!(r.first_epoch_loss.is_finite() && r.first_epoch_loss > 0.0, "{r:?}");
    assert!(r.last_epoch_loss < r.first_epoch_loss, "KL {} -> {}", r.first_epoch_loss, r.last_epoch_loss);
    let again = train_and_eval(sets, &cfg, Some(&teacher), 0, &device, None).unwrap();
    assert_eq!(again.last_epoch_loss, r.last_epoch_loss);
    // Without its teacher, or with a teacher of other classes, the run is refused.
    assert!(matches!(train_and_eval(sets, &cfg, None, 0, &device, None), Err(EvalError::NoTeacher)));
    let other = Teacher::load(&SoftLabels { classes: vec![1, 2], ..soft.clone() }, &device).unwrap();
    assert!(matches!(train_and_eval(sets, &cfg, Some(&other), 0, &device, None), Err(EvalError::NoTeacher)));
    let e = Teacher::load(&SoftLabels { classes: vec![5000], ..soft }, &device).err().unwrap();
    assert!(e.to_string().contains("5000"), "{e}");
}
