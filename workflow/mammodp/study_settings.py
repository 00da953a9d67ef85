"""The study's settings that decide whether a run can be compared with its published numbers
(``comparison``). Kept free of heavy imports: the workflow reads ``SETTING_KEYS`` while parsing.
"""

STUDY_MCGAN_WIDTH = 64

# The study's settings that the comparison checks, per scope (config key -> the study's value).
# data: crops rebuilt from DICOM (data.source tcia; gan_compare/dataset/base_dataset.py,
# data_utils/utils.py, configs/gan/dcgan_config.yaml); training: every run
# (configs/swin/dbr*.yaml, scripts/train_test_classifier.py); dp: DP runs (dbr*.yaml,
# constants.py make_private_with_epsilon); mcgan: an MCGAN trained here (scripts/train_gan.py,
# dcgan_config.yaml, the 1750-epoch checkpoint, 1750.pt, of medigan 00008).
STUDY_SETTINGS = {
    "data": {
        "data.crop.framing": "study",
        "data.crop.margin": 60,
        "data.crop.min_side": 128,
        "data.crop.size": 128,
        "data.crop.zoom_offset": 0.05,
        "data.crop.zoom_spread": 0.05,
        "data.crop.translation_spread": 0.05,
        "data.crop.max_translation_offset": 0.05,
        "data.lesions.contours": "study",
        "data.bcdr.intensity": "as_is",
        "data.split.file": "study",
    },
    "training": {
        "classifier.train.batch_size": 128,
        "classifier.train.lr": 1.0e-5,
        "classifier.train.weight_decay": 1.0e-8,
        "classifier.train.label_smoothing": 0.1,
    },
    "dp": {
        "classifier.dp.delta": 1.0e-4,
        "classifier.dp.max_grad_norm": 1.0,
        "classifier.dp.accountant": "rdp",
        "classifier.dp.epsilon_window": [0.75, 1.05],
    },
    "mcgan": {
        "synthesis.mcgan.epochs": 3000,
        "synthesis.mcgan.batch_size": 8,
        "synthesis.mcgan.lr": 1.0e-4,
        "synthesis.mcgan.beta1": 0.5,
        "synthesis.mcgan.latent_dim": 100,
        "synthesis.mcgan.embedding_dim": 50,
        "synthesis.mcgan.width": STUDY_MCGAN_WIDTH,
        "synthesis.mcgan.d_steps_per_g_step": 2,
        "synthesis.mcgan.real_label_low": 0.7,
        "synthesis.mcgan.real_label_high": 1.2,
        "synthesis.mcgan.sample_epoch": 1750,
        "synthesis.mcgan.input_range": "study",
        "synthesis.mcgan.init": "study",
        "synthesis.mcgan.augmentation": "study",
        "synthesis.mcgan.output_cast": "wrap",
    },
}
SETTING_KEYS = tuple(k for scope in STUDY_SETTINGS.values() for k in scope)
