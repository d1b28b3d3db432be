"""Twin of quickstart.cpp (and of the README's Python example)."""
import sys

import numpy as np

import ichkit

path = sys.argv[1] if len(sys.argv) > 1 else "head.nii.gz"
case = ichkit.phantom.make_case(shape=(256, 256, 32), spacing=(0.9, 0.9, 5.0), seed=0)
ichkit.write_nifti(case["image"], path)
v = ichkit.read_nifti(path)
assert np.array_equal(v.array, case["image"].array)
print(v.orientation, np.round(v.spacing, 3), "mm,", round(case["volume_ml"], 2), "mL of blood (", case["location"], ")")
