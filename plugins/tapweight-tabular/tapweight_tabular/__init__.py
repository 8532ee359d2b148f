"""tapweight-tabular: an example third-party domain for tapweight.

Adds the ``tabular`` domain (feature vectors): an MLP backbone, three self-supervised
objectives from the tabular SSL literature (masked-feature reconstruction, a denoising
autoencoder, SCARF), and tasks on the data sets scikit-learn ships. It uses only what
``tapweight`` exports at top level, which is the point: a domain needs nothing more.
"""

__version__ = "0.1.0"
