from setuptools import find_packages, setup

setup(
    name="clinical-ner",
    version="0.2.4",
    description=(
        "Clinical named-entity recognition (char-CNN + BiLSTM + CRF) in Keras 3, "
        "served by TensorFlow Serving"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["clinical_ner", "clinical_ner.*"]),
    # The bundled model `clinical` (MANIFEST.in puts it in the sdist too).
    package_data={"clinical_ner.pretrained": ["clinical/*"]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "numpy>=1.26",
        "grpcio>=1.60",
        "tensorflow-serving-api==2.21.*",
    ],
    extras_require={
        # The training-curve PNG; production inference does not need it.
        "train": ["matplotlib>=3.8"],
        # clinical-ner batch on Apache Beam. Beam 2.77 needs protobuf<7 (pip then
        # takes protobuf 6.33, which TensorFlow 2.21 accepts); without a floor pip
        # backtracks to old Beam source releases that no longer build.
        "beam": ["apache-beam>=2.77,<3"],
        # clinical_ner.spark (mapInPandas over Arrow); needs Java 17 or 21.
        "spark": ["pyspark[sql]>=4.3,<5"],
        # The lean runtime of a LiteRT export (clinical_ner.runtime), and the
        # export's own check. To run exports without TensorFlow, install with
        # --no-deps and add these two (docs/readme/runtimes.md).
        "litert": ["ai-edge-litert>=2.3,<3", "numpy>=1.26"],
        "test": ["pytest>=8", "hypothesis>=6.100", "pytest-timeout>=2.3"],
        # `clinical-ner vectors`: word2vec / fastText training and its progress bars.
        "vectors": ["gensim>=4.3,<5", "tqdm>=4.66"],
    },
    entry_points={"console_scripts": ["clinical-ner=clinical_ner.cli:main"]},
)
