"""Build script. Besides the package, it installs two start-up files into site-packages:

* ``hybrid_encoders.pth``: one ``import`` line, processed by ``site`` at interpreter start (Python <= 3.17);
* ``hybrid_encoders.start``: the PEP 829 equivalent (``pkg.mod:callable``) for Python >= 3.15.

Both run :func:`hybrid_encoders._bootstrap.install`, which is idempotent. Wheels get the files at their root (the
RECORD lists them, so ``pip uninstall`` removes them). PEP 660 editable builds throw ``build_lib`` away, so there the
files go to the unpacked editable wheel, which setuptools exposes as ``install.install_lib``.
"""

import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
STARTUP_FILES = ("hybrid_encoders.pth", "hybrid_encoders.start")

# name = "module:Class", per ESPnet registry (see README.md, "Entry-point contract").
ENTRY_POINTS = {
    "console_scripts": ["hybrid-encoders = hybrid_encoders.cli:main"],
    "espnet2.asr.encoder": [
        "squeezeformer = hybrid_encoders.encoders.squeezeformer:SqueezeformerEncoder",
        "hybridformer = hybrid_encoders.encoders.hybridformer:HybridformerEncoder",
        "zipformer = hybrid_encoders.encoders.zipformer:ZipformerEncoder",
    ],
    "espnet2.asr.model": [
        "espnet_rnnt = hybrid_encoders.transducer.model:TransducerASRModel",
        "espnet_crctc = hybrid_encoders.crctc.model:CRCTCASRModel",
    ],
    "espnet2.asr.decoder": [
        "stateless_transducer = hybrid_encoders.transducer.stateless_decoder:StatelessTransducerDecoder",
    ],
    "espnet2.asr.frontend": ["kaldi_fbank = hybrid_encoders.frontends.kaldi_fbank:KaldiFbankFrontend"],
    "espnet2.asr.specaug": ["adaptive_specaug = hybrid_encoders.specaug.adaptive:AdaptiveSpecAug"],
    "espnet2.optimizers": ["scaled_adam = hybrid_encoders.optim.scaled_adam:ScaledAdam"],
    "espnet2.schedulers": [
        "eden = hybrid_encoders.schedulers.eden:Eden",
        "eden2 = hybrid_encoders.schedulers.eden:Eden2",
        "noam_hold_annealing = hybrid_encoders.schedulers.noam_hold_annealing:NoamHoldAnnealing",
    ],
}
# The other ESPnet tasks whose `encoder` consumes (B, T, D) acoustic features the way asr's does get the encoders,
# the front end and the SpecAugment (README.md, "Which ESPnet tasks"; enh_s2t gets them through ESPnet's copies of
# asr's, st's and diar's choices). The asr-only components (models, transducer decoder) stay asr's.
FEATURE_ENCODER_TASKS = ("st", "slu", "s2t", "diar", "cls", "asvspoof")
for _task in FEATURE_ENCODER_TASKS:
    for _choice in ("encoder", "frontend", "specaug"):
        ENTRY_POINTS[f"espnet2.{_task}.{_choice}"] = ENTRY_POINTS[f"espnet2.asr.{_choice}"]


class BuildPyWithStartupFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        os.makedirs(target, exist_ok=True)
        for name in STARTUP_FILES:
            shutil.copyfile(os.path.join(HERE, name), os.path.join(target, name))

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [os.path.join(self.build_lib, name) for name in STARTUP_FILES]


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="hybrid-encoders",
    version="0.1.0",
    description="Squeezeformer, HybridFormer and Zipformer encoders, ScaledAdam and Eden for unmodified ESPnet",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["hybrid_encoders", "hybrid_encoders.*"]),
    install_requires=[
        "espnet>=202402",
        "torch>=2.1",
        "torchaudio>=2.1",
    ],
    extras_require={
        "recipes": ["sentencepiece", "lhotse", "jiwer", "espeakng-loader", "soundfile", "matplotlib", "tensorboard"],
        "test": ["pytest", "pytest-timeout"],
        "deploy": ["onnx", "onnxscript", "onnxruntime", "sherpa-onnx", "sherpa-onnx-bin"],
    },
    entry_points=ENTRY_POINTS,
    cmdclass={"build_py": BuildPyWithStartupFiles},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
