"""metsynth: synthetic femoral bone-metastasis CT for segmentation training.

Reproduces and extends Saillard et al., "Enhanced segmentation of femoral bone metastasis in CT
scans of patients using synthetic data generation with 3D diffusion models".
"""

__version__ = "0.1.0"
